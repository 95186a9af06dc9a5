-- name: bump_counters
-- Reserve $2[i] new seqs for user $1[i]; the row lock orders writers per user, so
-- seq order is commit order. Callers pass users sorted, which avoids deadlocks.
INSERT INTO user_counters AS c (user_id, last_seq)
SELECT u, n FROM unnest($1::text[], $2::bigint[]) AS t(u, n)
ON CONFLICT (user_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
RETURNING user_id, last_seq

-- name: insert_events
INSERT INTO user_events (user_id, seq, type, data)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[])

-- name: since
SELECT seq, type, data FROM user_events
WHERE user_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3

-- name: range
SELECT seq, type, data FROM user_events
WHERE user_id = $1 AND seq > $2 AND seq <= $3
ORDER BY seq

-- name: bounds
SELECT coalesce((SELECT last_seq FROM user_counters WHERE user_id = $1), 0) AS last_seq,
       (SELECT min(seq) FROM user_events WHERE user_id = $1) AS first_seq

-- name: last_seq
SELECT coalesce((SELECT last_seq FROM user_counters WHERE user_id = $1), 0)

-- name: prune
-- Drop events older than $1 days, but keep each user's newest $2.
DELETE FROM user_events e
USING user_counters c
WHERE e.user_id = c.user_id
  AND e.created_at < now() - make_interval(days => $1)
  AND e.seq <= c.last_seq - $2

-- name: heads
SELECT user_id, last_seq FROM user_counters WHERE user_id = ANY($1::text[])

-- name: lock_counters
-- Lock (creating if needed) the counter rows of users $1, in the order given (sorted by
-- the caller): a transaction that will append events for several users takes all
-- their locks up front, in one global order, so writers never deadlock.
INSERT INTO user_counters AS c (user_id, last_seq)
SELECT u, 0 FROM unnest($1::text[]) AS t(u)
ON CONFLICT (user_id) DO UPDATE SET last_seq = c.last_seq
