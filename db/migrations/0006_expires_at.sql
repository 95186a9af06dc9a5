-- Expiring notifications (docs/delivery.md, "Expiring notifications"): a notification
-- with expires_at leaves the inbox at that moment and is deleted by the sweeper.
ALTER TABLE notifications ADD COLUMN expires_at timestamptz;
-- The sweeper's claim: expired rows, oldest expiry first.
CREATE INDEX notifications_expires_idx ON notifications (expires_at)
    WHERE expires_at IS NOT NULL;
-- The unread count now also asks for expires_at: the unread index carries it, so the
-- count stays an index-only scan.
DROP INDEX notifications_unread_idx;
CREATE INDEX notifications_unread_idx ON notifications (user_id, id) INCLUDE (expires_at)
    WHERE read_at IS NULL;
