-- Action buttons (docs/api.md, "Action buttons"): a notification may carry up to three
-- actions, and its user chooses one of them once (POST /api/notifications/{id}/actions/
-- {action_id}). NULL actions: none (most notifications; nothing stored for them).
-- New nullable columns without a default: no table rewrite.
ALTER TABLE notifications ADD COLUMN actions jsonb;
-- The choice: the id of one of the actions, and when it was made; both or neither.
-- NOT VALID: the existing rows (all NULL) are not scanned; new writes are checked.
ALTER TABLE notifications ADD COLUMN action_id text;
ALTER TABLE notifications ADD COLUMN acted_at timestamptz;
ALTER TABLE notifications ADD CONSTRAINT notifications_action_check
    CHECK ((action_id IS NULL) = (acted_at IS NULL)) NOT VALID;
-- A scheduled notification keeps its actions until it is sent.
ALTER TABLE scheduled_notifications ADD COLUMN actions jsonb;

-- The outbox of the {prefix}actions Redis stream: a choice is written here in the
-- transaction that records it, and a relay (hub/actions.py) appends it to the stream
-- and deletes it, so a choice made while Redis is down reaches the stream once it is
-- back (at least once; consumers de-duplicate on id). No foreign key: a choice already
-- made is relayed even if its notification is deleted meanwhile.
CREATE TABLE action_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint      NOT NULL,
    user_id         text        NOT NULL,
    type            text        NOT NULL,
    action_id       text        NOT NULL,
    data            jsonb       NOT NULL,
    acted_at        timestamptz NOT NULL,
    -- A relay's lease: another one leaves the row alone until it passes.
    claimed_until   timestamptz
);
