-- name: append
-- Append events ($1 users, $2 types, $3 data) in one statement: each user's counter
-- goes up by their event count (row locks taken in user order, which keeps writers
-- from deadlocking; the lock orders writers per user, so seq order is commit order),
-- and their events get the seqs after the old value, in the order given. db/events.py
-- also runs it after another CTE in the same statement (``after``).
WITH e AS (
    SELECT u, ty, d, n,
           row_number() OVER (PARTITION BY u ORDER BY n) AS k,
           count(*) OVER (PARTITION BY u) AS cnt
    FROM unnest($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS t(u, ty, d, n)
), c AS (
    INSERT INTO user_counters AS c (user_id, last_seq)
    SELECT u, count(*) FROM e GROUP BY u ORDER BY u
    ON CONFLICT (user_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
    RETURNING user_id, last_seq
)
INSERT INTO user_events (user_id, seq, type, data)
SELECT e.u, c.last_seq - e.cnt + e.k, e.ty, e.d
FROM e JOIN c ON c.user_id = e.u
ORDER BY e.n
RETURNING user_id, seq

-- name: decided
-- A CTE put before append (db/events.py) to decide the deliveries of new notifications
-- in the same statement, so a group-commit batch does not pay a round trip for them:
-- $1-$11 are the parameters of deliveries_decide (db/queries/deliveries.sql, "decide").
-- It waits for the CTE ``stored`` (the batch's notifications, when the same statement
-- inserts them): a function runs its own statements with a fresh snapshot, which sees
-- the transaction's earlier statements and what this one wrote before it was called,
-- so it sees those rows (and their foreign keys hold). append's ``e`` then reads
-- ``decided``, so the decision is complete before the counters are locked: the lock
-- order of a create (digest jobs, then counters) stays what it is with two statements.
decided AS MATERIALIZED (
    SELECT deliveries_decide($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::float8[], $8::timestamptz, $9::text[],
                             $10::int, $11::int) AS done
    FROM (SELECT count(*) FROM stored) AS waited
)

-- name: since
SELECT seq, type, data FROM user_events
WHERE user_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3

-- name: bounds
SELECT coalesce((SELECT last_seq FROM user_counters WHERE user_id = $1), 0) AS last_seq,
       (SELECT min(seq) FROM user_events WHERE user_id = $1) AS first_seq

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
