-- Announcement scheduling: an announcement is broadcast live once, when it starts.
-- announced_at is set by whichever hub instance claims it (UPDATE ... WHERE announced_at
-- IS NULL), so several instances never broadcast the same announcement twice.

ALTER TABLE announcements ADD COLUMN announced_at timestamptz;

-- Announcements that already started before this migration are not news any more.
UPDATE announcements SET announced_at = created_at WHERE starts_at <= now();

CREATE INDEX announcements_pending_idx ON announcements (starts_at)
    WHERE announced_at IS NULL;
CREATE INDEX announcements_starts_idx ON announcements (starts_at DESC, id DESC);
