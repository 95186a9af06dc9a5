-- name: decide
-- The deliveries of notifications just inserted, as db/migrations/0007 defines them
-- (the statement lives in a function so that it runs with a generic plan): one per
-- candidate (notification $1, user $2, channel $3) the user has an address for, held
-- through quiet hours ($4 start, $5 end, $6 zone), due after delay $7 from $8 (NULL: now).
SELECT deliveries_decide($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::float8[], $8::timestamptz)

-- name: claim
-- Up to $2 due deliveries of channels $1, claimed for a lease of $3 seconds: the
-- attempt is counted and next_attempt_at moves to the lease's end, so the row is due
-- again (for any worker) if the claimer never records an outcome. SKIP LOCKED: two
-- workers never claim the same row. A 'held' row (quiet hours) is due at its window's
-- end like a scheduled one, and claiming it makes it 'scheduled' again.
WITH due AS (
    SELECT id FROM deliveries
    WHERE state IN ('scheduled', 'held') AND next_attempt_at <= now()
      AND channel = ANY($1::text[])
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
    SET state = 'scheduled', attempts = d.attempts + 1,
        claimed_until = now() + make_interval(secs => $3),
        next_attempt_at = now() + make_interval(secs => $3),
        updated_at = now()
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.channel, d.attempts, d.notification_id, d.user_id
)
SELECT c.id AS delivery_id, c.channel, c.attempts,
       n.id, n.user_id, n.type, n.title, n.body, n.link, n.data, n.priority,
       n.read_at IS NOT NULL AS read, n.read_at, n.created_at, n.expires_at,
       coalesce(n.expires_at <= now(), false) AS expired,
       k.email, k.phone, k.locale, k.time_zone
FROM claimed c
JOIN notifications n ON n.id = c.notification_id
LEFT JOIN contacts k ON k.user_id = c.user_id
ORDER BY c.id

-- name: sent
-- Outcomes apply only to the attempt that claimed the row ($2): a claim taken over
-- after its lease expired is no longer the claimer's to record.
UPDATE deliveries
SET state = 'sent', sent_at = now(), updated_at = now(), claimed_until = NULL,
    last_error = NULL
WHERE id = $1 AND attempts = $2 AND state = 'scheduled'

-- name: failed
UPDATE deliveries
SET state = 'failed', last_error = $3, updated_at = now(), claimed_until = NULL
WHERE id = $1 AND attempts = $2 AND state = 'scheduled'

-- name: skipped
UPDATE deliveries
SET state = 'skipped', last_error = $3, updated_at = now(), claimed_until = NULL
WHERE id = $1 AND attempts = $2 AND state = 'scheduled'

-- name: retry
UPDATE deliveries
SET last_error = $3, next_attempt_at = now() + make_interval(secs => $4),
    claimed_until = NULL, updated_at = now()
WHERE id = $1 AND attempts = $2 AND state = 'scheduled'

-- name: by_notification
SELECT channel, state, attempts, last_error, next_attempt_at, claimed_until,
       created_at, updated_at, sent_at
FROM deliveries WHERE notification_id = $1 ORDER BY channel

-- name: queue_depth
SELECT channel, count(*) AS n FROM deliveries WHERE state = 'scheduled' GROUP BY channel

-- name: prune
DELETE FROM deliveries
WHERE state IN ('sent', 'failed', 'skipped') AND updated_at < now() - make_interval(days => $1)

-- name: dismiss
-- Cross-device dismissal: notifications $1 were just read (in the caller's transaction).
-- Their push deliveries are locked first (a worker's claim skips them meanwhile), then:
-- one not being sent ('scheduled' or 'held' without a live claim) becomes 'skipped',
-- 'read in-app', so it is never sent (again); one that may show on a device gets a
-- 'push.dismiss' delivery, due now (at most one per notification: the unique key): it
-- was sent, or it is 'scheduled' after an attempt (being sent now, or an attempt
-- failed on some browsers but maybe not all). Returns how many were skipped and how
-- many dismissals were scheduled.
WITH push AS (
    SELECT id, notification_id, user_id, state, attempts, claimed_until
    FROM deliveries
    WHERE notification_id = ANY($1::bigint[]) AND channel = 'push'
    ORDER BY id
    FOR UPDATE
), skipped AS (
    UPDATE deliveries d
    SET state = 'skipped', last_error = 'read in-app', updated_at = now(),
        claimed_until = NULL
    FROM push p
    WHERE d.id = p.id AND p.state IN ('scheduled', 'held')
      AND (p.claimed_until IS NULL OR p.claimed_until <= now())
    RETURNING d.id
), dismissals AS (
    INSERT INTO deliveries (notification_id, user_id, channel, state, next_attempt_at)
    SELECT p.notification_id, p.user_id, 'push.dismiss', 'scheduled', now()
    FROM push p
    WHERE p.state = 'sent' OR (p.state = 'scheduled' AND p.attempts > 0)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM skipped) AS skipped,
       (SELECT count(*) FROM dismissals) AS dismissals

-- name: push_state
-- The state of notification $1's push delivery.
SELECT state FROM deliveries WHERE notification_id = $1 AND channel = 'push'
