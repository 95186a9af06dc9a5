-- Localized grouped templates (docs/api.md, "Grouped templates"): a locale variant may
-- carry its own "grouped" text, {"title", "body"?, "someone"?}, chosen with the variant
-- by the recipient's locale; a variant without one titles a group "{title} ({count})"
-- in its own language, never with another language's grouped text.
--
-- "someone" is what {actor} says when no create of the group gave an actor (without it,
-- "Someone"). hub/templates.grouped appends it to the rendered pattern after the marker
-- \x1eS; a pattern without that marker (every one stored before this migration, such
-- as a scheduled notification's) keeps "Someone".
CREATE OR REPLACE FUNCTION notification_group_text(pattern text, n integer, actors text[])
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(replace(replace(split_part(pattern, E'\x1eS', 1),
                                   E'\x1eC', n::text),
                           E'\x1eO', (n - 1)::text),
                   E'\x1eA', coalesce(actors[1],
                                      nullif(split_part(pattern, E'\x1eS', 2), ''),
                                      'Someone'))
$$;

-- The German grouped text of the four seed templates that have a grouped one. Only the
-- seeds as shipped: a template an admin replaced (its grouped text, or its German
-- variant's title) keeps its own.
UPDATE templates
SET locales = jsonb_set(locales, '{de,grouped}', v.grouped::jsonb)
FROM (VALUES
    ('friend_request',
     '{"title": "{actor} und {others} weitere haben dir Freundschaftsanfragen geschickt", "someone": "Jemand"}',
     '{"title": "{actor} and {others} others sent you friend requests"}',
     'Freundschaftsanfrage von {sender_name}'),
    ('new_message', '{"title": "{count} neue Nachrichten von {sender_id}"}',
     '{"title": "{count} new messages from {sender_id}"}', 'Neue Nachricht von {sender_id}'),
    ('grade_posted', '{"title": "{count} Noten eingetragen"}',
     '{"title": "{count} grades posted"}', 'Note eingetragen'),
    ('achievement_unlocked', '{"title": "{count} Erfolge freigeschaltet"}',
     '{"title": "{count} achievements unlocked"}', 'Erfolg freigeschaltet: {achievement}')
) AS v(key, grouped, english, german_title)
WHERE templates.key = v.key AND templates.grouped = v.english::jsonb
  AND templates.locales -> 'de' ->> 'title' = v.german_title
  AND NOT templates.locales -> 'de' ? 'grouped';
