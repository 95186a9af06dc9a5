-- name: insert
-- $4 starts_at (NULL = now); an announcement that starts now is announced at once.
INSERT INTO announcements (title, body, level, starts_at, ends_at, announced_at)
VALUES ($1, $2, $3, coalesce($4, now()), $5,
        CASE WHEN coalesce($4, now()) <= now() THEN now() END)
RETURNING id, title, body, level, starts_at, ends_at, created_at,
          announced_at IS NOT NULL AS announced

-- name: active
SELECT id, title, body, level, starts_at, ends_at, created_at
FROM announcements
WHERE starts_at <= now() AND (ends_at IS NULL OR ends_at > now())
ORDER BY starts_at DESC, id DESC
LIMIT $1

-- name: current_and_scheduled
SELECT id, title, body, level, starts_at, ends_at, created_at
FROM announcements
WHERE ends_at IS NULL OR ends_at > now()
ORDER BY starts_at DESC, id DESC
LIMIT $1

-- name: delete
DELETE FROM announcements WHERE id = $1 RETURNING id

-- name: claim_due
-- Concurrent claims serialise on the row lock; the loser re-checks announced_at and
-- skips the row, so each announcement is claimed exactly once.
UPDATE announcements SET announced_at = now()
WHERE announced_at IS NULL AND starts_at <= now()
RETURNING id, title, body, level, starts_at, ends_at, created_at,
          (ends_at IS NULL OR ends_at > now()) AS active

-- name: seconds_to_next
SELECT extract(epoch FROM min(starts_at) - now())::float8
FROM announcements WHERE announced_at IS NULL
