-- name: get
SELECT prefs FROM preferences WHERE user_id = $1

-- name: get_many
SELECT user_id, prefs FROM preferences WHERE user_id = ANY($1::text[])

-- name: put
INSERT INTO preferences (user_id, prefs) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET prefs = EXCLUDED.prefs, updated_at = now()
RETURNING prefs
