-- Localized templates (docs/api.md, "Templates"): a template may carry variants per
-- locale, {"<BCP 47 tag>": {"title", "body", "link"}} (link null: the template's own);
-- a notification rendered from it takes the variant that matches its recipient's
-- contact locale, else the template's own text.

ALTER TABLE templates ADD COLUMN locales jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The nine seed templates in German, as the second language the demo ships.
UPDATE templates SET locales = v.locales::jsonb
FROM (VALUES
    ('assignment_created', '{"de": {"title": "Neue Aufgabe: {assignment}",
        "body": "{course}: „{assignment}“ ist fällig am {due_date}.", "link": null}}'),
    ('assignment_due_soon', '{"de": {"title": "Bald fällig: {assignment}",
        "body": "{course}: „{assignment}“ ist fällig am {due_date}.", "link": null}}'),
    ('grade_posted', '{"de": {"title": "Note eingetragen",
        "body": "Deine Note für {assignment}: {grade}", "link": null}}'),
    ('friend_request', '{"de": {"title": "Freundschaftsanfrage von {sender_name}",
        "body": "{sender_name} möchte mit dir befreundet sein.", "link": null}}'),
    ('group_invitation', '{"de": {"title": "Einladung in {group_name}",
        "body": "{inviter_name} hat dich in {group_name} eingeladen.", "link": null}}'),
    ('achievement_unlocked', '{"de": {"title": "Erfolg freigeschaltet: {achievement}",
        "body": "Du hast „{achievement}“ erreicht. {description}", "link": null}}'),
    ('study_goal_milestone', '{"de": {"title": "Etappe erreicht: {goal}",
        "body": "Du hast {milestone} bei „{goal}“ erreicht. Weiter so!", "link": null}}'),
    ('new_message', '{"de": {"title": "Neue Nachricht von {sender_id}",
        "body": "{preview}", "link": null}}'),
    ('system_announcement', '{"de": {"title": "{title}", "body": "{message}", "link": null}}')
) AS v(key, locales)
-- Only the seeds as shipped: a template an admin replaced keeps its own text.
WHERE templates.key = v.key AND templates.locales = '{}'::jsonb;
