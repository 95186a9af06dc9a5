-- name: list_all
SELECT key, type, title, body, link FROM templates ORDER BY key

-- name: get
SELECT key, type, title, body, link FROM templates WHERE key = $1

-- name: put
INSERT INTO templates (key, type, title, body, link) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO UPDATE
SET type = EXCLUDED.type, title = EXCLUDED.title, body = EXCLUDED.body,
    link = EXCLUDED.link, updated_at = now()
RETURNING key, type, title, body, link

-- name: get_many
SELECT key, type, title, body, link FROM templates WHERE key = ANY($1::text[])
