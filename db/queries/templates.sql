-- name: list_all
SELECT key, type, title, body, link, locales, grouped FROM templates ORDER BY key

-- name: get
SELECT key, type, title, body, link, locales, grouped FROM templates WHERE key = $1

-- name: put
INSERT INTO templates (key, type, title, body, link, locales, grouped)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (key) DO UPDATE
SET type = EXCLUDED.type, title = EXCLUDED.title, body = EXCLUDED.body,
    link = EXCLUDED.link, locales = EXCLUDED.locales, grouped = EXCLUDED.grouped,
    updated_at = now()
RETURNING key, type, title, body, link, locales, grouped
