-- name: allocate_ids
-- $1 new notification ids, ascending, for rows inserted later in this transaction.
SELECT array_agg(nextval('notifications_id_seq') ORDER BY n)
FROM generate_series(1, $1::int) AS n

-- name: insert_rows
-- One row per array position, with the ids allocate_ids gave, returned in that order.
-- $10 actions as JSON text (arrays of arrays would have to be rectangular): NULL for a
-- notification without any.
INSERT INTO notifications (id, user_id, type, title, body, link, data, priority, expires_at,
                           actions)
OVERRIDING SYSTEM VALUE
SELECT i, u, ty, ti, b, l, d, p, x, a::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[], $8::text[], $9::timestamptz[], $10::text[])
     WITH ORDINALITY AS t(i, u, ty, ti, b, l, d, p, x, a, n)
ORDER BY n
RETURNING id, user_id, type, title, body, link, data, priority,
          read_at IS NOT NULL AS read, read_at, created_at, expires_at,
          coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at

-- name: by_ids
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at
FROM notifications WHERE id = ANY($1::bigint[]) ORDER BY id

-- name: page
-- $2 before (exclusive), $3 unread only, $4 type, $5 ILIKE pattern, $6 limit + 1.
-- An expired notification is hidden at once, swept or not.
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at
FROM notifications
WHERE user_id = $1
  AND (expires_at IS NULL OR expires_at > now())
  AND ($2::bigint IS NULL OR id < $2)
  AND (NOT $3::boolean OR read_at IS NULL)
  AND ($4::text IS NULL OR type = $4)
  AND ($5::text IS NULL OR title ILIKE $5 OR body ILIKE $5)
ORDER BY id DESC
LIMIT $6

-- name: unread_count
SELECT count(*) FROM notifications
WHERE user_id = $1 AND read_at IS NULL AND (expires_at IS NULL OR expires_at > now())

-- name: mark_read
UPDATE notifications SET read_at = now()
WHERE user_id = $1 AND id = ANY($2::bigint[]) AND read_at IS NULL
RETURNING id

-- name: mark_all_read
UPDATE notifications SET read_at = now()
WHERE user_id = $1 AND read_at IS NULL AND ($2::bigint IS NULL OR id <= $2)
RETURNING id

-- name: delete
DELETE FROM notifications WHERE id = $1 AND user_id = $2 RETURNING id

-- name: delete_any
-- An admin's delete: whoever's it is; returns its user.
DELETE FROM notifications WHERE id = $1 RETURNING user_id

-- name: get
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at
FROM notifications WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)

-- name: claim_requests
-- Claim keys $1 with what each request creates: ids $2 and suppressed users $3 (one
-- JSON array as text per key: arrays of arrays would have to be rectangular). Returns
-- the keys that were free. Keys are claimed in sorted order, so two transactions
-- claiming overlapping keys queue up rather than deadlock; a key that another
-- transaction claimed and has not committed yet waits for it.
INSERT INTO notification_requests (idempotency_key, notification_ids, suppressed)
SELECT k, ARRAY(SELECT jsonb_array_elements_text(ids::jsonb)::bigint),
       ARRAY(SELECT jsonb_array_elements_text(sup::jsonb))
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, ids, sup)
ORDER BY k
ON CONFLICT DO NOTHING
RETURNING idempotency_key

-- name: get_requests
SELECT idempotency_key, notification_ids, suppressed FROM notification_requests
WHERE idempotency_key = ANY($1::text[])

-- name: prune_read
DELETE FROM notifications WHERE read_at < now() - make_interval(days => $1)

-- name: prune_requests
-- A key whose scheduled notification still waits is kept: a repeat must not schedule it
-- again.
DELETE FROM notification_requests r
WHERE created_at < now() - make_interval(days => $1)
  AND NOT EXISTS (SELECT 1 FROM scheduled_notifications s
                  WHERE s.idempotency_key = r.idempotency_key)

-- name: resolve_requests
-- A scheduled create's keys $1 now name what it created at send_at: ids $2 and
-- suppressed users $3 (JSON arrays as text, as in claim_requests); kept from now on for
-- HUB_HISTORY_DAYS.
UPDATE notification_requests r
SET notification_ids = ARRAY(SELECT jsonb_array_elements_text(t.ids::jsonb)::bigint),
    suppressed = ARRAY(SELECT jsonb_array_elements_text(t.sup::jsonb)),
    created_at = now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, ids, sup)
WHERE r.idempotency_key = t.k

-- name: delete_for_message
-- The new_message notifications that quote direct message $2.
DELETE FROM notifications
WHERE user_id = $1 AND type = 'new_message' AND data->>'message_id' = $2::bigint::text
RETURNING id

-- name: expire
-- Delete up to $1 expired notifications, oldest expiry first; SKIP LOCKED: instances
-- sweeping at once take different rows. Their deliveries go with them (ON DELETE CASCADE).
WITH due AS (
    SELECT id FROM notifications
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM notifications n USING due WHERE n.id = due.id
RETURNING n.id, n.user_id

-- name: unread_counts
-- The unread count of each user $1 (as unread_count).
SELECT u AS user_id,
       (SELECT count(*) FROM notifications
        WHERE user_id = u AND read_at IS NULL
          AND (expires_at IS NULL OR expires_at > now())) AS n
FROM unnest($1::text[]) AS u

-- name: for_action
-- Notification $1 if it is user $2's, locked for recording a choice (its row before the
-- user's counter: the order every notification write takes).
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at,
       coalesce(expires_at <= now(), false) AS expired
FROM notifications WHERE id = $1 AND user_id = $2
FOR UPDATE

-- name: record_action
-- Record choice $2 on notification $1 (locked by for_action, without one yet), mark it
-- read, and queue the choice for the {prefix}actions stream in the same statement.
WITH chosen AS (
    UPDATE notifications
    SET action_id = $2, acted_at = now(), read_at = coalesce(read_at, now())
    WHERE id = $1
    RETURNING *
), queued AS (
    INSERT INTO action_outbox (notification_id, user_id, type, action_id, data, acted_at)
    SELECT id, user_id, type, action_id, data, acted_at FROM chosen
)
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at
FROM chosen
