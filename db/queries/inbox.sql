-- The inbox's states beside read (hub/inbox.py, docs/api.md "The inbox"): seen,
-- archived, snoozed. Each change returns the ids it changed: a notification already in
-- the state asked for is left alone and not listed. "Up to" forms compare position, the
-- inbox's order (the id, or a newer number for one that returned from a snooze).

-- name: seen
-- User $1's notifications among $2 not seen yet, in any box.
UPDATE notifications SET seen_at = now()
WHERE user_id = $1 AND id = ANY($2::bigint[]) AND seen_at IS NULL
RETURNING id

-- name: seen_upto
-- The inbox's unseen notifications at or below position $2. Unseen implies unread, so
-- the WHERE is notifications_unread_idx's.
UPDATE notifications SET seen_at = now()
WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL AND snoozed_until IS NULL
  AND seen_at IS NULL AND position <= $2
RETURNING id

-- name: archive
-- User $1's notifications among $2 not archived yet; a snoozed one's snooze ends (it
-- stays in the archive).
UPDATE notifications SET archived_at = now(), snoozed_until = NULL
WHERE user_id = $1 AND id = ANY($2::bigint[]) AND archived_at IS NULL
RETURNING id

-- name: archive_upto
-- The inbox's notifications at or below position $2.
UPDATE notifications SET archived_at = now()
WHERE user_id = $1 AND archived_at IS NULL AND snoozed_until IS NULL AND position <= $2
RETURNING id

-- name: unarchive
-- User $1's archived notifications among $2: back in the inbox, at their position.
UPDATE notifications SET archived_at = NULL
WHERE user_id = $1 AND id = ANY($2::bigint[]) AND archived_at IS NOT NULL
RETURNING id

-- name: unarchive_upto
-- The archive's notifications at or below position $2.
UPDATE notifications SET archived_at = NULL
WHERE user_id = $1 AND archived_at IS NOT NULL AND position <= $2
RETURNING id

-- name: snooze
-- User $1's notification $2 leaves the inbox (or the archive) until $3; nothing when it
-- is not theirs or expires by then.
UPDATE notifications SET snoozed_until = $3, archived_at = NULL
WHERE id = $2 AND user_id = $1 AND (expires_at IS NULL OR expires_at > $3)
RETURNING id, snoozed_until

-- name: return_due
-- Up to $1 snoozed notifications whose time has come, soonest first, back in the inbox
-- as new: unread, unseen, with a new position from the id sequence (above everything
-- before it). SKIP LOCKED: instances returning at once take different rows, and a row
-- another transaction holds (being re-snoozed, archived, deleted) waits for the next
-- round; once this commits, the row is no longer snoozed, so it returns once. An expired
-- one is left to the expiry sweeper.
WITH due AS (
    SELECT id FROM notifications
    WHERE snoozed_until <= now() AND (expires_at IS NULL OR expires_at > now())
    ORDER BY snoozed_until, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), moved AS (
    SELECT id, nextval('notifications_id_seq') AS position FROM due
)
UPDATE notifications n
SET snoozed_until = NULL, read_at = NULL, seen_at = NULL, position = moved.position,
    -- a group read before it was snoozed stays closed: it returns as a plain one
    collapse_key = CASE WHEN n.read_at IS NULL THEN n.collapse_key END
FROM moved WHERE n.id = moved.id
RETURNING n.id, n.user_id, n.type, n.title, n.body, n.link, n.data, n.priority,
          n.read_at IS NOT NULL AS read, n.read_at, n.seen_at IS NOT NULL AS seen,
          n.seen_at, n.archived_at IS NOT NULL AS archived, n.archived_at,
          n.snoozed_until, n.position, n.created_at, n.expires_at,
          coalesce(n.actions, '[]'::jsonb) AS actions, n.action_id, n.acted_at,
          n.collapse_key, n.group_count, n.actors

-- name: seconds_to_return
-- Seconds until the next snoozed notification returns (negative when overdue).
SELECT extract(epoch FROM min(snoozed_until) - now())::float8
FROM notifications
WHERE snoozed_until IS NOT NULL AND (expires_at IS NULL OR expires_at > now())
