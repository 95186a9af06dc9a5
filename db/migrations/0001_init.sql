-- notifyhub schema, version 1.
-- Every user-visible change is recorded in user_events with a gap-free per-user seq,
-- allocated from user_counters in the same transaction as the change.

CREATE TABLE notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text        NOT NULL,
    type            text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL DEFAULT '',
    link            text,
    data            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority        text        NOT NULL DEFAULT 'normal'
                                CHECK (priority IN ('low', 'normal', 'high')),
    read_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_read_at_idx ON notifications (read_at) WHERE read_at IS NOT NULL;

-- One row per idempotent create call; its unique key makes concurrent repeats wait
-- for the first and then read what it created.
CREATE TABLE notification_requests (
    idempotency_key text        PRIMARY KEY,
    notification_ids bigint[]   NOT NULL DEFAULT '{}',
    suppressed      text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE preferences (
    user_id         text        PRIMARY KEY,
    prefs           jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE direct_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_id       text        NOT NULL,
    recipient_id    text        NOT NULL,
    body            text        NOT NULL,
    client_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    hidden_for_sender    boolean NOT NULL DEFAULT false,
    hidden_for_recipient boolean NOT NULL DEFAULT false,
    CHECK (sender_id <> recipient_id)
);
CREATE UNIQUE INDEX direct_messages_client_idx
    ON direct_messages (sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX direct_messages_pair_idx ON direct_messages
    (LEAST(sender_id, recipient_id), GREATEST(sender_id, recipient_id), id DESC);
CREATE INDEX direct_messages_sender_idx ON direct_messages (sender_id, id DESC);
CREATE INDEX direct_messages_recipient_idx ON direct_messages (recipient_id, id DESC);
CREATE INDEX direct_messages_unread_idx
    ON direct_messages (recipient_id, sender_id) WHERE read_at IS NULL;

CREATE TABLE announcements (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title           text        NOT NULL,
    body            text        NOT NULL DEFAULT '',
    level           text        NOT NULL DEFAULT 'info'
                                CHECK (level IN ('info', 'warning', 'critical')),
    starts_at       timestamptz NOT NULL DEFAULT now(),
    ends_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE templates (
    key             text        PRIMARY KEY,
    type            text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL DEFAULT '',
    link            text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_counters (
    user_id         text        PRIMARY KEY,
    last_seq        bigint      NOT NULL
);

CREATE TABLE user_events (
    user_id         text        NOT NULL,
    seq             bigint      NOT NULL,
    type            text        NOT NULL,
    data            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX user_events_created_idx ON user_events (created_at);

INSERT INTO templates (key, type, title, body, link) VALUES
('assignment_created', 'assignment_created',
    'New assignment: {assignment}',
    '{course}: "{assignment}" is due {due_date}.', '/assignments/{assignment_id}'),
('assignment_due_soon', 'assignment_due_soon',
    'Due soon: {assignment}',
    '{course}: "{assignment}" is due {due_date}.', '/assignments/{assignment_id}'),
('grade_posted', 'grade_posted',
    'Grade posted',
    'Your grade for {assignment} is {grade}', '/grades/{grade_id}'),
('friend_request', 'friend_request',
    'Friend request from {sender_name}',
    '{sender_name} wants to be your friend.', '/friends/requests'),
('group_invitation', 'group_invitation',
    'Invitation to {group_name}',
    '{inviter_name} invited you to join {group_name}.', '/groups/{group_id}'),
('achievement_unlocked', 'achievement_unlocked',
    'Achievement unlocked: {achievement}',
    'You earned "{achievement}". {description}', '/achievements'),
('study_goal_milestone', 'study_goal_milestone',
    'Milestone reached: {goal}',
    'You reached {milestone} on "{goal}". Keep going!', '/goals'),
('new_message', 'new_message',
    'New message from {sender_id}',
    '{preview}', '/messages/{sender_id}'),
('system_announcement', 'system_announcement',
    '{title}',
    '{message}', NULL);
