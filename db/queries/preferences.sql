-- name: get
SELECT prefs FROM preferences WHERE user_id = $1

-- name: get_for_update
-- The stored document of $1, locked for this transaction; $2 (the defaults) is stored
-- first when there is none, so two concurrent patches of a new user queue up too.
INSERT INTO preferences AS p (user_id, prefs) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET prefs = p.prefs
RETURNING prefs

-- name: get_many
SELECT user_id, prefs FROM preferences WHERE user_id = ANY($1::text[])

-- name: put
INSERT INTO preferences (user_id, prefs) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET prefs = EXCLUDED.prefs, updated_at = now()
RETURNING prefs
