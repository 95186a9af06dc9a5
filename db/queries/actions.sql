-- The outbox of the {prefix}actions Redis stream (hub/actions.py, docs/ingest.md
-- "Action choices"). A choice is queued by notifications.record_action in the
-- transaction that records it; a relay leases rows, appends them to the stream, then
-- deletes them.

-- name: claim
-- Lease up to $1 rows for $2 seconds, oldest first; SKIP LOCKED and the lease keep
-- relays (of several instances) from taking the same rows.
WITH due AS (
    SELECT id FROM action_outbox
    WHERE claimed_until IS NULL OR claimed_until <= now()
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE action_outbox o SET claimed_until = now() + make_interval(secs => $2)
FROM due WHERE o.id = due.id
RETURNING o.id, o.notification_id, o.user_id, o.type, o.action_id, o.data, o.acted_at

-- name: delete
-- Rows $1 are on the stream.
DELETE FROM action_outbox WHERE id = ANY($1::bigint[])

-- name: release
-- Rows $1 could not be appended: due again at once.
UPDATE action_outbox SET claimed_until = NULL WHERE id = ANY($1::bigint[])

-- name: prune
-- Choices not relayed within $1 days (no Redis all that time) are given up.
DELETE FROM action_outbox WHERE acted_at < now() - make_interval(days => $1)
