-- Grouping by collapse key (docs/api.md, "Grouping"; hub/notifications.py).
--
-- A create with a collapse_key joins the user's open group with that key (their
-- unread notification with it, in any box) instead of adding a notification: the group
-- counts the creates it absorbed (group_count) and keeps its most recent distinct actors
-- (actors, newest first, at most 5). Once read, the group is closed: the next create
-- with the key starts a new one.
ALTER TABLE notifications
    ADD COLUMN collapse_key text,
    ADD COLUMN group_count  integer NOT NULL DEFAULT 1,
    ADD COLUMN actors       text[]  NOT NULL DEFAULT '{}';
-- One open group per user and key, across instances: the create path's INSERT ... ON
-- CONFLICT arbitrates on it.
CREATE UNIQUE INDEX notifications_group_idx ON notifications (user_id, collapse_key)
    WHERE collapse_key IS NOT NULL AND read_at IS NULL;

-- A template's grouped variant: {"title", "body"?} with {actor}, {others} and {count}
-- besides the data's placeholders; NULL: the default, "{title} ({count})".
ALTER TABLE templates ADD COLUMN grouped jsonb;

-- A scheduled create groups when it is sent.
ALTER TABLE scheduled_notifications
    ADD COLUMN collapse_key  text,
    ADD COLUMN actor         text,
    ADD COLUMN grouped_title text,
    ADD COLUMN grouped_body  text;

-- A grouped pattern rendered: hub/templates.grouped renders the data's placeholders and
-- leaves {count}, {others} and {actor} as the markers \x1eC, \x1eO and \x1eA (the data's
-- own text never carries \x1e), filled here from the group's count and newest actor.
CREATE FUNCTION notification_group_text(pattern text, n integer, actors text[])
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(replace(replace(pattern, E'\x1eC', n::text), E'\x1eO', (n - 1)::text),
                   E'\x1eA', coalesce(actors[1], 'Someone'))
$$;

-- A group's actors once ``newer`` (newest first) joined it: distinct, newest first, 5.
CREATE FUNCTION notification_group_actors(newer text[], older text[])
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(a ORDER BY o), '{}') FROM (
        SELECT a, min(o) AS o FROM unnest(newer || older) WITH ORDINALITY AS u(a, o)
        GROUP BY a ORDER BY min(o) LIMIT 5
    ) AS kept
$$;

UPDATE templates SET grouped = '{"title": "{actor} and {others} others sent you friend requests"}'
WHERE key = 'friend_request';
UPDATE templates SET grouped = '{"title": "{count} new messages from {sender_id}"}'
WHERE key = 'new_message';
UPDATE templates SET grouped = '{"title": "{count} grades posted"}'
WHERE key = 'grade_posted';
UPDATE templates SET grouped = '{"title": "{count} achievements unlocked"}'
WHERE key = 'achievement_unlocked';
