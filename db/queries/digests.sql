-- Digests (docs/delivery.md, "Digests"). A digest job is the delivery on channel
-- 'email.digest' of user $1 for the period ending $2 (digest_at); its emails are the
-- user's email deliveries in state 'digest' with the same digest_at.

-- name: leave_out
-- Building attempt $3 of the digest: its emails whose notification was read or has
-- expired by now are left out for good ('skipped', with why).
UPDATE deliveries d
SET state = 'skipped', updated_at = now(), attempts = $3,
    last_error = CASE WHEN n.read_at IS NOT NULL THEN 'read in-app' ELSE 'expired' END
FROM notifications n
WHERE d.user_id = $1 AND d.digest_at = $2 AND d.state = 'digest'
  AND n.id = d.notification_id
  AND (n.read_at IS NOT NULL OR n.expires_at <= now())

-- name: counts
-- How many unread notifications the digest holds per type, the type with the newest
-- notification first; at most $3 types.
SELECT n.type, count(*)::int AS count, max(n.id) AS newest
FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE d.user_id = $1 AND d.digest_at = $2 AND d.state = 'digest'
GROUP BY n.type
ORDER BY newest DESC
LIMIT $3

-- name: total
SELECT count(*)::int FROM deliveries
WHERE user_id = $1 AND digest_at = $2 AND state = 'digest'

-- name: items
-- The digest's $3 newest notifications.
SELECT n.id, n.type, n.title, n.body, n.link, n.created_at
FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE d.user_id = $1 AND d.digest_at = $2 AND d.state = 'digest'
ORDER BY n.id DESC
LIMIT $3

-- name: flush
-- User $1 changed their digest setting: their digests not begun yet are due now (and
-- their emails say so). Each leaves its period's slot (user, digest_at) for a value of
-- its own, before 1970 and unique by the job's id, so that notifications of the rest
-- of that period start a new job under the new setting instead of finding this one.
WITH pending AS (
    SELECT id, digest_at FROM deliveries
    WHERE user_id = $1 AND channel = 'email.digest' AND state = 'held' AND attempts = 0
      AND next_attempt_at > now()
    FOR UPDATE
), jobs AS (
    UPDATE deliveries d
    SET next_attempt_at = now(), updated_at = now(),
        digest_at = timestamptz 'epoch' - make_interval(secs => p.id)
    FROM pending p WHERE d.id = p.id
    RETURNING d.id
), members AS (
    UPDATE deliveries m
    SET next_attempt_at = now(), updated_at = now(),
        digest_at = timestamptz 'epoch' - make_interval(secs => p.id)
    FROM pending p
    WHERE m.user_id = $1 AND m.digest_at = p.digest_at AND m.state = 'digest'
)
SELECT count(*)::int FROM jobs

-- name: cancel
-- User $1 unsubscribed from all email: their digests not begun yet are never sent;
-- the jobs and their emails become 'skipped', reason $2, and leave their periods' slots
-- as flush does (email turned on again starts new digests).
WITH pending AS (
    SELECT id, digest_at FROM deliveries
    WHERE user_id = $1 AND channel = 'email.digest' AND state = 'held' AND attempts = 0
    FOR UPDATE
), jobs AS (
    UPDATE deliveries d
    SET state = 'skipped', last_error = $2, updated_at = now(),
        digest_at = timestamptz 'epoch' - make_interval(secs => p.id)
    FROM pending p WHERE d.id = p.id
    RETURNING d.id
), members AS (
    UPDATE deliveries m
    SET state = 'skipped', last_error = $2, updated_at = now(),
        digest_at = timestamptz 'epoch' - make_interval(secs => p.id)
    FROM pending p
    WHERE m.user_id = $1 AND m.digest_at = p.digest_at AND m.state = 'digest'
)
SELECT count(*)::int FROM jobs
