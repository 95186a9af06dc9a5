-- name: get
SELECT user_id, email, phone, locale, time_zone, updated_at FROM contacts WHERE user_id = $1

-- name: put
-- The whole contact of $1: fields not given are cleared.
INSERT INTO contacts AS c (user_id, email, phone, locale, time_zone)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, phone = EXCLUDED.phone,
    locale = EXCLUDED.locale, time_zone = EXCLUDED.time_zone, updated_at = now()
RETURNING user_id, email, phone, locale, time_zone, updated_at

-- name: delete
DELETE FROM contacts WHERE user_id = $1 RETURNING user_id

-- name: merge_many
-- Inline contacts of creates: the fields given (not null) replace the stored ones, the
-- others are kept. Rows in user order, so concurrent batches lock them in one order.
INSERT INTO contacts AS c (user_id, email, phone, locale, time_zone)
SELECT u, e, p, l, z
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS t(u, e, p, l, z)
ORDER BY u
ON CONFLICT (user_id) DO UPDATE SET
    email = coalesce(EXCLUDED.email, c.email), phone = coalesce(EXCLUDED.phone, c.phone),
    locale = coalesce(EXCLUDED.locale, c.locale),
    time_zone = coalesce(EXCLUDED.time_zone, c.time_zone), updated_at = now()

-- name: time_zones
-- The time zone names PostgreSQL knows (it reads its whole tz database: ~30 ms).
SELECT name FROM pg_timezone_names
