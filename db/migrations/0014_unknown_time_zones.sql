-- Time zone names PostgreSQL does not know (its tz database is older or newer than
-- Python's, e.g. America/Coyhaique, new in tzdata 2025b) were accepted before: a
-- contact or quiet hours storing one made every create for that user fail, since
-- deciding its deliveries converts to that zone. They are now refused with 422
-- (hub/contacts.py); those stored before fall back as the docs say a missing zone does
-- (docs/delivery.md, "Recipients' addresses"): a contact's zone is cleared (the quiet
-- hours' zone is used, else UTC), and the quiet hours' own zone becomes UTC.
UPDATE contacts SET time_zone = NULL, updated_at = now()
WHERE time_zone IS NOT NULL AND time_zone NOT IN (SELECT name FROM pg_timezone_names);

UPDATE preferences
SET prefs = jsonb_set(prefs, '{quiet_hours,timezone}', '"UTC"'), updated_at = now()
WHERE jsonb_typeof(prefs -> 'quiet_hours') = 'object'
  AND prefs -> 'quiet_hours' ->> 'timezone' NOT IN (SELECT name FROM pg_timezone_names);
