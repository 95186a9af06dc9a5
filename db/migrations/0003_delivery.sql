-- Delivery to users who are not looking (docs/delivery.md): the user directory and one
-- delivery job per notification x channel, decided in the notification's transaction.

CREATE TABLE contacts (
    user_id         text        PRIMARY KEY,
    email           text,
    phone           text,
    locale          text,
    time_zone       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- state: scheduled (waiting for its next attempt, or claimed by a worker until
-- claimed_until), held (reserved: quiet hours), sent, failed (reason in last_error),
-- skipped (reason in last_error). A claim moves next_attempt_at to the end of its lease,
-- so a crashed worker's claim is due again, for any worker, once the lease expires.
CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint      NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    channel         text        NOT NULL,
    state           text        NOT NULL DEFAULT 'scheduled'
                                CHECK (state IN ('scheduled', 'held', 'sent', 'failed',
                                                 'skipped')),
    last_error      text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (notification_id, channel)
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE state = 'scheduled';
CREATE INDEX deliveries_finished_idx ON deliveries (updated_at)
    WHERE state IN ('sent', 'failed', 'skipped');
