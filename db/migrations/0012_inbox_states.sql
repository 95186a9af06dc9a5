-- Seen, archived and snoozed notifications, and the inbox's sort key (docs/api.md,
-- "The inbox"; hub/inbox.py).
--
-- seen_at: the bell showed it (POST /api/notifications/seen). Reading implies seeing:
-- every statement that sets read_at sets seen_at too, so an unseen notification is
-- always unread, and both counts come from the one unread index below.
-- archived_at: out of the inbox, in the archive, until unarchived.
-- snoozed_until: out of the inbox until then; the notification scheduler returns it
-- (hub/scheduled.py), as new and unread, with a new position.
-- position: the inbox's order and cursor (newest first). It is the id at creation and
-- a fresh value of the id sequence when a snoozed notification returns, so it sorts
-- above everything before it; it is unique, as the sequence's values are.
ALTER TABLE notifications
    ADD COLUMN seen_at       timestamptz,
    ADD COLUMN archived_at   timestamptz,
    ADD COLUMN snoozed_until timestamptz,
    ADD COLUMN position      bigint;
UPDATE notifications SET position = id, seen_at = read_at;
ALTER TABLE notifications ALTER COLUMN position SET NOT NULL;

-- Every list pages by position: the whole mailbox (box=all, box=archived) ...
DROP INDEX notifications_user_idx;
CREATE INDEX notifications_user_idx ON notifications (user_id, position DESC);
-- ... and the inbox, the default box, without walking past what was archived.
CREATE INDEX notifications_inbox_idx ON notifications (user_id, position DESC)
    WHERE archived_at IS NULL AND snoozed_until IS NULL;
-- The counts (unread, and unseen among them), mark-all-read and seen-up-to: the inbox's
-- unread notifications; expires_at and seen_at ride along so the counts stay an
-- index-only scan.
DROP INDEX notifications_unread_idx;
CREATE INDEX notifications_unread_idx ON notifications (user_id, position)
    INCLUDE (expires_at, seen_at)
    WHERE read_at IS NULL AND archived_at IS NULL AND snoozed_until IS NULL;
-- The scheduler's claim of returning snoozes, soonest first.
CREATE INDEX notifications_snoozed_idx ON notifications (snoozed_until)
    WHERE snoozed_until IS NOT NULL;
