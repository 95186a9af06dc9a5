-- name: decide
-- The deliveries of notifications just inserted: one candidate per (notification $1,
-- user $2, channel $3) that the preferences enable on a configured channel; kept only
-- where the user has an address for it (email: contacts.email, sms: contacts.phone,
-- push: a push subscription; webhook: none needed).
-- Quiet hours: a candidate with a window ($4 start, $5 end, 'HH:MM'; NULL: never held)
-- whose window covers the moment $8 (NULL: now()) on the wall clock of the user's zone
-- (contacts.time_zone, else $6, the quiet hours' own) is written 'held' until the
-- window's next end, converted back from that wall clock (so DST changes are right); a
-- window whose end is before its start spans midnight; start = end is no window.
-- Escalation: a candidate's delay $7 (seconds; 0: none) makes it due that much later,
-- and quiet hours are judged at that later moment.
-- Digests ($9: 'hourly', 'daily', 'weekly'; NULL: none; email only): the candidate's
-- period ends at the next full hour, or the next $10:00 (daily; weekly: on ISO weekday
-- $11) strictly after it is due, on the wall clock of the user's zone (contacts
-- time_zone, else $6, else UTC); an end inside the quiet hours moves to the window's end.
-- One digest job per (user, period end) is upserted (sorted: a fixed lock order); the
-- upsert locks an existing job, so a worker's claim (SKIP LOCKED) waits for this
-- transaction, and the email is written 'digest' with digest_at = the period end. A job
-- already claimed (attempts > 0: its digest is being built) takes no more: the email is
-- then 'scheduled' at once, on its own.
WITH cand AS (
    SELECT t.n, t.u, t.c, t.dg, t.qs::time AS qs, t.qe::time AS qe,
           coalesce(k.time_zone, t.qz, 'UTC') AS zone,
           coalesce($8::timestamptz, now()) + make_interval(secs => t.d) AS due
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::float8[], $9::text[])
         AS t(n, u, c, qs, qe, qz, d, dg)
    LEFT JOIN contacts k ON k.user_id = t.u
    WHERE CASE t.c WHEN 'email' THEN k.email IS NOT NULL
                   WHEN 'sms' THEN k.phone IS NOT NULL
                   WHEN 'push' THEN EXISTS (SELECT 1 FROM push_subscriptions s
                                            WHERE s.user_id = t.u)
                   ELSE true END
), timed AS (
    SELECT cand.*,
           CASE cand.dg
               WHEN 'hourly' THEN date_trunc('hour', h.here) + interval '1 hour'
               WHEN 'daily' THEN date_trunc('day', h.here - make_interval(hours => $10))
                                 + interval '1 day' + make_interval(hours => $10)
               WHEN 'weekly' THEN
                   date_trunc('week', h.here - make_interval(days => $11 - 1, hours => $10))
                   + interval '1 week' + make_interval(days => $11 - 1, hours => $10)
           END AT TIME ZONE cand.zone AS period_end
    FROM cand CROSS JOIN LATERAL (SELECT cand.due AT TIME ZONE cand.zone AS here) h
), judged AS (
    SELECT timed.*, q.until, coalesce(q.until, timed.period_end) AS fin
    FROM timed
    CROSS JOIN LATERAL (
        SELECT coalesce(timed.period_end, timed.due) AT TIME ZONE timed.zone AS here
    ) w
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN timed.qs IS NULL OR timed.qs = timed.qe THEN NULL
            WHEN (timed.qs < timed.qe AND w.here::time >= timed.qs AND w.here::time < timed.qe)
              OR (timed.qs > timed.qe AND (w.here::time >= timed.qs OR w.here::time < timed.qe))
            THEN (w.here::date + timed.qe
                  + CASE WHEN timed.qe <= w.here::time THEN interval '1 day'
                         ELSE interval '0' END
                 ) AT TIME ZONE timed.zone
        END AS until
    ) q
), jobs AS (
    INSERT INTO deliveries (user_id, channel, state, next_attempt_at, digest_at)
    SELECT DISTINCT u, 'email.digest', 'held', fin, fin FROM judged WHERE dg IS NOT NULL
    ORDER BY u, fin
    ON CONFLICT (user_id, digest_at) WHERE channel = 'email.digest'
    DO UPDATE SET updated_at = deliveries.updated_at
    WHERE deliveries.state = 'held' AND deliveries.attempts = 0
    RETURNING user_id, digest_at
)
INSERT INTO deliveries (notification_id, user_id, channel, state, next_attempt_at, digest_at)
SELECT j.n, j.u, j.c,
       CASE WHEN o.digest_at IS NOT NULL THEN 'digest'
            WHEN j.dg IS NULL AND j.until IS NOT NULL THEN 'held'
            ELSE 'scheduled' END,
       CASE WHEN o.digest_at IS NOT NULL THEN o.digest_at
            WHEN j.dg IS NULL THEN coalesce(j.until, j.due)
            ELSE j.due END,
       o.digest_at
FROM judged j
LEFT JOIN jobs o ON j.dg IS NOT NULL AND o.user_id = j.u AND o.digest_at = j.fin
ON CONFLICT DO NOTHING

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
       coalesce(n.expires_at <= now(), false) AS expired,
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
    SET state = 'sent', sent_at = now(), updated_at = now(), claimed_until = NULL,
        last_error = NULL
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

-- name: failed
WITH d AS (
    UPDATE deliveries
    SET state = 'failed', last_error = $3, updated_at = now(), claimed_until = NULL
    WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
    RETURNING user_id, channel, digest_at
), members AS (
    UPDATE deliveries m
    SET state = 'failed', last_error = $3, updated_at = now(), attempts = $2
    FROM d
    WHERE d.channel = 'email.digest' AND m.user_id = d.user_id
      AND m.digest_at = d.digest_at AND m.state = 'digest'
)
SELECT count(*) FROM d

-- name: skipped
WITH d AS (
    UPDATE deliveries
    SET state = 'skipped', last_error = $3, updated_at = now(), claimed_until = NULL
    WHERE id = $1 AND attempts = $2 AND state = 'scheduled'
    RETURNING user_id, channel, digest_at
), members AS (
    UPDATE deliveries m
    SET state = 'skipped', last_error = $3, updated_at = now(), attempts = $2
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
