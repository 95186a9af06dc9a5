-- name: insert_many
INSERT INTO notifications (user_id, type, title, body, link, data, priority)
SELECT u, $2, $3, $4, $5, $6, $7 FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n)
ORDER BY n
RETURNING id, user_id, type, title, body, link, data, priority,
          read_at IS NOT NULL AS read, read_at, created_at

-- name: by_ids
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at
FROM notifications WHERE id = ANY($1::bigint[]) ORDER BY id

-- name: page
-- $2 before (exclusive), $3 unread only, $4 type, $5 ILIKE pattern, $6 limit + 1
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, created_at
FROM notifications
WHERE user_id = $1
  AND ($2::bigint IS NULL OR id < $2)
  AND (NOT $3::boolean OR read_at IS NULL)
  AND ($4::text IS NULL OR type = $4)
  AND ($5::text IS NULL OR title ILIKE $5 OR body ILIKE $5)
ORDER BY id DESC
LIMIT $6

-- name: unread_count
SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL

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

-- name: claim_request
INSERT INTO notification_requests (idempotency_key) VALUES ($1)
ON CONFLICT DO NOTHING
RETURNING idempotency_key

-- name: get_request
SELECT notification_ids, suppressed FROM notification_requests WHERE idempotency_key = $1

-- name: finish_request
UPDATE notification_requests SET notification_ids = $2, suppressed = $3
WHERE idempotency_key = $1

-- name: prune_read
DELETE FROM notifications WHERE read_at < now() - make_interval(days => $1)

-- name: prune_requests
DELETE FROM notification_requests WHERE created_at < now() - make_interval(days => $1)

-- name: delete_for_message
-- The new_message notifications that quote direct message $2.
DELETE FROM notifications
WHERE user_id = $1 AND type = 'new_message' AND data->>'message_id' = $2::bigint::text
RETURNING id
