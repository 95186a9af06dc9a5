-- Scheduled notifications (docs/delivery.md, "Scheduled notifications"): a create with a
-- future send_at is stored here, rendered, and becomes a normal notification at send_at
-- in the transaction that deletes its row (hub/notifications.py), so it is sent once.
CREATE TABLE scheduled_notifications (
    -- From notifications_id_seq: GET and DELETE /api/notifications/{id} take either kind,
    -- and an id names one thing only.
    id              bigint      PRIMARY KEY,
    send_at         timestamptz NOT NULL,
    user_ids        text[]      NOT NULL,
    type            text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    link            text,
    data            jsonb       NOT NULL,
    priority        text        NOT NULL CHECK (priority IN ('low', 'normal', 'high')),
    expires_at      timestamptz,
    -- The create's key: its notification_requests row is pointed at the notifications
    -- made at send_at, and is not pruned while this row waits.
    idempotency_key text,
    -- The recipients whose locale picked a variant of the template (docs/api.md,
    -- "Localized templates"), rendered when it was scheduled: {user: [title, body, link]}.
    localized       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A scheduler's lease: another instance leaves the row alone until it passes.
    claimed_until   timestamptz
);
CREATE INDEX scheduled_notifications_send_at_idx ON scheduled_notifications (send_at);
CREATE INDEX scheduled_notifications_users_idx ON scheduled_notifications USING gin (user_ids);
CREATE INDEX scheduled_notifications_key_idx ON scheduled_notifications (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
