-- name: decide
-- The deliveries of notifications just inserted, as the function deliveries_decide
-- defines them (db/migrations/0007, 0008; a function so that the statement runs with a
-- generic plan): one per candidate (notification $1, user $2, channel $3) the user has
-- an address for, held through quiet hours ($4 start, $5 end, $6 zone), due after delay
-- $7 from $8 (NULL: now); an email of a user with a digest ($9) waits for the period's
-- end (daily and weekly at hour $10, weekly on ISO weekday $11) in the period's job.
SELECT deliveries_decide($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::float8[], $8::timestamptz, $9::text[], $10::int,
                         $11::int)

-- name: claim
-- Up to $2 due deliveries of channels $1, claimed for a lease of $3 seconds: the
-- attempt is counted and next_attempt_at moves to the lease's end, so the row is due
-- again (for any worker) if the claimer never records an outcome. SKIP LOCKED: two
-- workers never claim the same row. A 'held' row (quiet hours) is due at its window's
-- end like a scheduled one, and claiming it makes it 'scheduled' again; so is a digest
-- job (channel 'email.digest', no notification: its columns are NULL) at its period end.
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
    RETURNING d.id, d.channel, d.attempts, d.notification_id, d.user_id, d.digest_at
)
SELECT c.id AS delivery_id, c.channel, c.attempts, c.user_id AS recipient, c.digest_at,
       n.id, n.user_id, n.type, n.title, n.body, n.link, n.data, n.priority,
       n.read_at IS NOT NULL AS read, n.read_at, n.created_at, n.expires_at,
       CASE WHEN n.id IS NOT NULL THEN coalesce(n.actions, '[]'::jsonb) END AS actions,
       coalesce(n.expires_at <= now(), false) AS expired,
       n.snoozed_until IS NOT NULL AND c.channel <> 'push.dismiss' AS snoozed,
       k.email, k.phone, k.locale, k.time_zone
FROM claimed c
LEFT JOIN notifications n ON n.id = c.notification_id
LEFT JOIN contacts k ON k.user_id = c.user_id
ORDER BY c.id

-- name: sent
-- Outcomes apply only to the attempt that claimed the row ($2): a claim taken over
-- after its lease expired is no longer the claimer's to record. A digest job's outcome
-- is also its emails' (those still 'digest': the ones its build put in the email).
-- Each returns 1 when the attempt's outcome was recorded, 0 when the claim was lost.
WITH d AS (
    UPDATE deliveries
    SET state = 'sent', sent_at = coalesce(sent_at, now()), updated_at = now(),
        claimed_until = NULL, last_error = NULL
    WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
    RETURNING user_id, channel, digest_at
), members AS (
    UPDATE deliveries m
    SET state = 'sent', sent_at = now(), updated_at = now(), attempts = $2,
        last_error = NULL
    FROM d
    WHERE d.channel = 'email.digest' AND m.user_id = d.user_id
      AND m.digest_at = d.digest_at AND m.state = 'digest'
)
SELECT count(*) FROM d

-- name: skip_snoozed
-- Attempt $2 of $1, claimed while its notification was snoozed: 'skipped' ('snoozed')
-- if it still is; if the notification came back meanwhile, due again at once and the
-- attempt not counted (its return found this row being sent and let it stand for its
-- channel). The notification's row is locked FOR SHARE first: a return committing now
-- is waited for, and one not yet begun skips it (FOR UPDATE SKIP LOCKED) until this is
-- recorded. True if skipped, false if released, no row if the claim was lost.
WITH n AS (
    SELECT n.snoozed_until IS NOT NULL AS away
    FROM deliveries d JOIN notifications n ON n.id = d.notification_id
    WHERE d.id = $1
    FOR SHARE OF n
)
UPDATE deliveries d
SET state = CASE WHEN n.away THEN 'skipped' ELSE 'scheduled' END,
    last_error = CASE WHEN n.away THEN 'snoozed' ELSE d.last_error END,
    attempts = CASE WHEN n.away THEN d.attempts ELSE d.attempts - 1 END,
    next_attempt_at = CASE WHEN n.away THEN d.next_attempt_at ELSE now() END,
    claimed_until = NULL, updated_at = now()
FROM n
WHERE d.id = $1 AND d.attempts = $2 AND d.state = 'scheduled'
RETURNING n.away

-- name: closed
-- Attempt $2 of $1 ends the delivery for good: state $4 ('failed': it can never
-- succeed; 'skipped': not sent on purpose), reason $3. A digest job's emails end with it.
WITH d AS (
    UPDATE deliveries
    SET state = $4, last_error = $3, updated_at = now(), claimed_until = NULL
    WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
    RETURNING user_id, channel, digest_at
), members AS (
    UPDATE deliveries m
    SET state = $4, last_error = $3, updated_at = now(), attempts = $2
    FROM d
    WHERE d.channel = 'email.digest' AND m.user_id = d.user_id
      AND m.digest_at = d.digest_at AND m.state = 'digest'
)
SELECT count(*) FROM d

-- name: retry
-- A digest's emails wait with it: the error and the next attempt show on each of them.
WITH d AS (
    UPDATE deliveries
    SET last_error = $3, next_attempt_at = now() + make_interval(secs => $4),
        claimed_until = NULL, updated_at = now()
    WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
    RETURNING user_id, channel, digest_at, next_attempt_at
), members AS (
    UPDATE deliveries m
    SET last_error = $3, next_attempt_at = d.next_attempt_at, updated_at = now(),
        attempts = $2
    FROM d
    WHERE d.channel = 'email.digest' AND m.user_id = d.user_id
      AND m.digest_at = d.digest_at AND m.state = 'digest'
)
SELECT count(*) FROM d

-- name: by_notification
SELECT channel, state, attempts, last_error, next_attempt_at, claimed_until,
       created_at, updated_at, sent_at
FROM deliveries WHERE notification_id = $1 ORDER BY channel

-- name: queue_depth
SELECT channel, count(*) AS n FROM deliveries WHERE state = 'scheduled' GROUP BY channel

-- name: prune
DELETE FROM deliveries
WHERE state IN ('sent', 'failed', 'skipped') AND updated_at < now() - make_interval(days => $1)

-- name: snoozed
-- Notifications $1 were just snoozed (in the caller's transaction): their deliveries
-- not being sent ('scheduled' or 'held' without a live claim, or waiting for a digest)
-- become 'skipped', 'snoozed', so nothing goes out while they are away; their return
-- decides them again (forget_finished, then decide). One being sent goes on, and a
-- push dismissal still goes out. Returns how many were skipped.
WITH skipped AS (
    UPDATE deliveries
    SET state = 'skipped', last_error = 'snoozed', updated_at = now(), claimed_until = NULL
    WHERE notification_id = ANY($1::bigint[]) AND channel <> 'push.dismiss'
      AND state IN ('scheduled', 'held', 'digest')
      AND (claimed_until IS NULL OR claimed_until <= now())
    RETURNING id
)
SELECT count(*) FROM skipped

-- name: forget_finished
-- Notifications $1 came back from a snooze as new (in the caller's transaction): their
-- finished deliveries (sent, failed, skipped; push dismissals too) make room for the
-- ones decided next, one per notification and channel. One still going out stays, and
-- stands for its channel.
DELETE FROM deliveries
WHERE notification_id = ANY($1::bigint[]) AND state IN ('sent', 'failed', 'skipped')

-- name: dismiss
-- Cross-device dismissal: notifications $1 were just read (in the caller's transaction).
-- Their push deliveries are locked first (a worker's claim skips them meanwhile), then:
-- one not being sent ('scheduled' or 'held' without a live claim) becomes 'skipped',
-- 'read in-app', so it is never sent (again); one that may show on a device gets a
-- 'push.dismiss' delivery, due now (at most one per notification: the unique key): it
-- was sent, or it is 'scheduled' after an attempt (being sent now, or an attempt
-- failed on some browsers but maybe not all), or it ended 'failed' after a push
-- service accepted it for some browser (sent_at set by 'reached'). Returns how many
-- were skipped and how many dismissals were scheduled.
WITH push AS (
    SELECT id, notification_id, user_id, state, attempts, claimed_until, sent_at
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
       OR (p.state IN ('failed', 'skipped') AND p.sent_at IS NOT NULL)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM skipped) AS skipped,
       (SELECT count(*) FROM dismissals) AS dismissals

-- name: push_state
-- The state of notification $1's push delivery, and whether a push service accepted it
-- for any browser (sent_at: when one first did).
SELECT state, sent_at IS NOT NULL AS reached
FROM deliveries WHERE notification_id = $1 AND channel = 'push'

-- name: reached
-- Attempt $2 of delivery $1 was accepted for some of its recipient's browsers, though
-- the delivery is retried (or fails) for the others: sent_at records the first time.
UPDATE deliveries SET sent_at = coalesce(sent_at, now())
WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
