-- Deciding deliveries (docs/delivery.md) as a PL/pgSQL function whose one statement runs
-- with a generic plan. As a plain prepared statement PostgreSQL re-planned it at every
-- execution (its custom plan for the typical 1-3 candidates looked cheaper than the
-- generic one for the assumed 10), ~0.3 ms of PostgreSQL CPU per group-commit batch;
-- and the generic plan it chose once the contacts table looked small hashed the whole
-- table. The contact lookup is a LATERAL ... LIMIT 1, so the generic plan is one index
-- probe per candidate whatever the table statistics say.
--
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
CREATE FUNCTION deliveries_decide(
    bigint[], text[], text[], text[], text[], text[], float8[], timestamptz
) RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    INSERT INTO deliveries (notification_id, user_id, channel, state, next_attempt_at)
    SELECT t.n, t.u, t.c,
           CASE WHEN q.until IS NULL THEN 'scheduled' ELSE 'held' END,
           coalesce(q.until, w.due)
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::float8[])
         AS t(n, u, c, qs, qe, qz, d)
    -- One index probe per candidate (LIMIT 1 keeps the planner from turning these into a
    -- hash of the whole table: the cached generic plan sees ~10 candidates and small tables).
    LEFT JOIN LATERAL (
        SELECT c.email, c.phone, c.time_zone FROM contacts c WHERE c.user_id = t.u LIMIT 1
    ) k ON true
    CROSS JOIN LATERAL (
        SELECT coalesce($8::timestamptz, now()) + make_interval(secs => t.d) AS due
    ) m
    CROSS JOIN LATERAL (
        SELECT m.due, coalesce(k.time_zone, t.qz) AS zone, t.qs::time AS qs, t.qe::time AS qe,
               m.due AT TIME ZONE coalesce(k.time_zone, t.qz) AS here
    ) w
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN w.qs IS NULL OR w.qs = w.qe THEN NULL
            WHEN (w.qs < w.qe AND w.here::time >= w.qs AND w.here::time < w.qe)
              OR (w.qs > w.qe AND (w.here::time >= w.qs OR w.here::time < w.qe))
            THEN (w.here::date + w.qe
                  + CASE WHEN w.qe <= w.here::time THEN interval '1 day' ELSE interval '0' END
                 ) AT TIME ZONE w.zone
        END AS until
    ) q
    WHERE CASE t.c WHEN 'email' THEN k.email IS NOT NULL
                   WHEN 'sms' THEN k.phone IS NOT NULL
                   WHEN 'push' THEN EXISTS (SELECT 1 FROM push_subscriptions s
                                            WHERE s.user_id = t.u LIMIT 1)
                   ELSE true END
    ON CONFLICT DO NOTHING;
END
$fn$;
