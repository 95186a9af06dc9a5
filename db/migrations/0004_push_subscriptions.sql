-- Web push subscriptions (docs/delivery.md, "Web push"): one row per browser
-- PushSubscription. The endpoint is the subscription's identity (a capability URL at the
-- browser vendor's push service), so it is unique across users: a browser that
-- subscribes for another user hands its endpoint over to that user.

CREATE TABLE push_subscriptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text        NOT NULL,
    endpoint        text        NOT NULL UNIQUE,
    p256dh          text        NOT NULL,
    auth            text        NOT NULL,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);

CREATE INDEX push_subscriptions_user_idx ON push_subscriptions (user_id, created_at DESC);
