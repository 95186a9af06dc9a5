-- Digests (docs/delivery.md, "Digests"): a user whose preferences ask for an hourly,
-- daily or weekly digest gets their email deliveries in state 'digest', each with the
-- end of its period in digest_at, and one digest job per user and period: a delivery on
-- the channel 'email.digest' without a notification, 'held' until digest_at, then
-- claimed, retried and recorded by the delivery workers like any delivery.
ALTER TABLE deliveries ALTER COLUMN notification_id DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN digest_at timestamptz;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('scheduled', 'held', 'digest', 'sent', 'failed', 'skipped'));
-- Only a digest job has no notification, and it always names its period.
ALTER TABLE deliveries ADD CONSTRAINT deliveries_digest_job_check
    CHECK ((notification_id IS NOT NULL) <> (channel = 'email.digest' AND digest_at IS NOT NULL));
-- One digest job per user and period, however many instances decide deliveries.
CREATE UNIQUE INDEX deliveries_digest_job_idx ON deliveries (user_id, digest_at)
    WHERE channel = 'email.digest';
-- A digest job's build and outcome find its notifications' email deliveries.
CREATE INDEX deliveries_digest_idx ON deliveries (user_id, digest_at) WHERE state = 'digest';

-- Deciding deliveries now also writes digest emails and upserts digest jobs: the
-- function of 0007 takes the digest of each candidate ($9) and the digest hour ($10)
-- and ISO weekday ($11). Still one statement with a generic plan (see 0007).
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
DROP FUNCTION deliveries_decide(bigint[], text[], text[], text[], text[], text[], float8[],
                                timestamptz);
CREATE FUNCTION deliveries_decide(
    bigint[], text[], text[], text[], text[], text[], float8[], timestamptz, text[], int, int
) RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    -- The common case, no quiet hours, escalation or digest among the candidates: each
    -- is due at once, and the statement below has nothing to compute.
    IF NOT EXISTS (SELECT 1 FROM unnest($4::text[], $7::float8[], $9::text[]) AS x(qs, d, dg)
                   WHERE x.qs IS NOT NULL OR x.d <> 0 OR x.dg IS NOT NULL) THEN
        INSERT INTO deliveries (notification_id, user_id, channel, state, next_attempt_at)
        SELECT t.n, t.u, t.c, 'scheduled', coalesce($8::timestamptz, now())
        FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(n, u, c)
        LEFT JOIN LATERAL (
            SELECT c.phone, c.email FROM contacts c WHERE c.user_id = t.u LIMIT 1
        ) k ON true
        WHERE CASE t.c WHEN 'email' THEN k.email IS NOT NULL
                       WHEN 'sms' THEN k.phone IS NOT NULL
                       WHEN 'push' THEN EXISTS (SELECT 1 FROM push_subscriptions s
                                                WHERE s.user_id = t.u LIMIT 1)
                       ELSE true END
        ON CONFLICT DO NOTHING;
        RETURN;
    END IF;
    WITH cand AS (
        SELECT t.n, t.u, t.c, t.dg, t.qs::time AS qs, t.qe::time AS qe,
               coalesce(k.time_zone, t.qz, 'UTC') AS zone,
               coalesce($8::timestamptz, now()) + make_interval(secs => t.d) AS due
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::float8[], $9::text[])
             AS t(n, u, c, qs, qe, qz, d, dg)
        LEFT JOIN LATERAL (
            SELECT c.phone, c.email, c.time_zone FROM contacts c WHERE c.user_id = t.u LIMIT 1
        ) k ON true
        WHERE CASE t.c WHEN 'email' THEN k.email IS NOT NULL
                       WHEN 'sms' THEN k.phone IS NOT NULL
                       WHEN 'push' THEN EXISTS (SELECT 1 FROM push_subscriptions s
                                                WHERE s.user_id = t.u LIMIT 1)
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
    ON CONFLICT DO NOTHING;
END
$fn$;
