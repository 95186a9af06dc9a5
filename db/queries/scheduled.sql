-- Scheduled notifications (hub/scheduled.py, docs/delivery.md "Scheduled notifications").
-- A row waits here until send_at; the create transaction that turns it into
-- notifications deletes it (take), so it is sent once however many instances run.

-- name: insert_rows
-- One row per array position ($1 ids from notifications.read_batch), returned in that order.
INSERT INTO scheduled_notifications
    (id, send_at, user_ids, type, title, body, link, data, priority, expires_at,
     idempotency_key, localized, actions, collapse_key, actor, grouped_title, grouped_body)
SELECT i, s, ARRAY(SELECT jsonb_array_elements_text(u::jsonb)), ty, ti, b, l, d, p, x, k,
       loc, ac::jsonb, ck, a, gt, gb
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[],
            $11::text[], $12::jsonb[], $13::text[], $14::text[], $15::text[], $16::text[],
            $17::text[])
     WITH ORDINALITY AS t(i, s, u, ty, ti, b, l, d, p, x, k, loc, ac, ck, a, gt, gb, n)
ORDER BY n
RETURNING id, 'scheduled' AS status, send_at, user_ids, type, title, body, link, data,
          priority, expires_at, created_at, coalesce(actions, '[]'::jsonb) AS actions

-- name: by_ids
SELECT id, 'scheduled' AS status, send_at, user_ids, type, title, body, link, data,
       priority, expires_at, created_at, coalesce(actions, '[]'::jsonb) AS actions
FROM scheduled_notifications WHERE id = ANY($1::bigint[]) ORDER BY id

-- name: page
-- $1 user (NULL: everyone's), $2 before (exclusive), $3 limit + 1; newest first.
SELECT id, 'scheduled' AS status, send_at, user_ids, type, title, body, link, data,
       priority, expires_at, created_at, coalesce(actions, '[]'::jsonb) AS actions
FROM scheduled_notifications
WHERE ($1::text IS NULL OR user_ids @> ARRAY[$1::text])
  AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3

-- name: cancel
DELETE FROM scheduled_notifications WHERE id = $1 RETURNING id

-- name: claim_due
-- Lease up to $1 due rows for $2 seconds, soonest first; SKIP LOCKED and the lease keep
-- instances from taking the same rows. The lease only spreads the work: what makes a
-- row sent once is take, in the transaction that creates its notifications.
WITH due AS (
    SELECT id FROM scheduled_notifications
    WHERE send_at <= now() AND (claimed_until IS NULL OR claimed_until <= now())
    ORDER BY send_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE scheduled_notifications s SET claimed_until = now() + make_interval(secs => $2)
FROM due WHERE s.id = due.id
RETURNING s.id, s.user_ids, s.type, s.title, s.body, s.link, s.data, s.priority,
          s.expires_at, s.idempotency_key, s.localized, s.actions, s.collapse_key, s.actor,
          s.grouped_title, s.grouped_body

-- name: take
-- Inside a create transaction: delete rows $1 (in id order, skipping any another
-- transaction holds: it is sending or cancelling them). Returns each row deleted and
-- whether it is still to be sent (not expired).
DELETE FROM scheduled_notifications s
USING (SELECT id FROM scheduled_notifications WHERE id = ANY($1::bigint[])
       ORDER BY id FOR UPDATE SKIP LOCKED) AS t
WHERE s.id = t.id
RETURNING s.id, (s.expires_at IS NULL OR s.expires_at > now()) AS live

-- name: drop
DELETE FROM scheduled_notifications WHERE id = ANY($1::bigint[])

-- name: seconds_to_next
-- Seconds until a row is next due or its lease ends (negative when overdue).
SELECT extract(epoch FROM min(greatest(send_at, coalesce(claimed_until, send_at))) - now())::float8
FROM scheduled_notifications
