-- name: upsert
-- Store subscription ($2 endpoint, $3 p256dh, $4 auth, $5 user agent) for user $1; an
-- endpoint already stored (for anyone) is updated and moves to $1. Returns its row.
INSERT INTO push_subscriptions AS s (user_id, endpoint, p256dh, auth, user_agent)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (endpoint) DO UPDATE
SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth,
    user_agent = EXCLUDED.user_agent,
    created_at = CASE WHEN s.user_id = EXCLUDED.user_id THEN s.created_at ELSE now() END
RETURNING id, user_id, endpoint, created_at

-- name: trim
-- Keep user $1's newest $2 subscriptions; delete the older ones.
DELETE FROM push_subscriptions
WHERE user_id = $1 AND id NOT IN (
    SELECT id FROM push_subscriptions WHERE user_id = $1
    ORDER BY created_at DESC, id DESC LIMIT $2)

-- name: delete_for_user
DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2 RETURNING id

-- name: for_user
SELECT id, endpoint, p256dh, auth FROM push_subscriptions
WHERE user_id = $1 ORDER BY created_at DESC, id DESC

-- name: delete_ids
DELETE FROM push_subscriptions WHERE id = ANY($1::bigint[])

-- name: touch
UPDATE push_subscriptions SET last_used_at = now() WHERE id = ANY($1::bigint[])

-- name: count_for_user
SELECT count(*) FROM push_subscriptions WHERE user_id = $1
