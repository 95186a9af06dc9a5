-- name: read_batch
-- What a create batch reads before it builds its rows, in one round trip: $1 new
-- notification ids, ascending, for rows inserted later in this transaction; the
-- transaction's now(), the created_at those rows get; the saved preferences of the
-- users $2 as one object {user_id: prefs}, without those who saved none; the templates
-- named $3 as one object {key: template}; and, only when one of those templates has
-- locale variants, the contact locales of the users $4 {user_id: locale}, without
-- those who have none; and $5 new direct-message ids, ascending, for the messages a
-- send batch stores in the same statement as their notifications (messages.sql,
-- insert_checked).
SELECT (SELECT array_agg(nextval('notifications_id_seq') ORDER BY n)
        FROM generate_series(1, $1::int) AS n) AS ids,
       (SELECT array_agg(nextval('direct_messages_id_seq') ORDER BY n)
        FROM generate_series(1, $5::int) AS n) AS message_ids,
       now() AS now,
       (SELECT jsonb_object_agg(user_id, prefs) FROM preferences
        WHERE user_id = ANY($2::text[])) AS prefs,
       (SELECT jsonb_object_agg(key, jsonb_build_object(
                   'key', key, 'type', type, 'title', title, 'body', body, 'link', link,
                   'locales', locales, 'grouped', grouped))
        FROM templates WHERE key = ANY($3::text[])) AS templates,
       (SELECT jsonb_object_agg(user_id, locale) FROM contacts
        WHERE user_id = ANY($4::text[]) AND locale IS NOT NULL
          AND EXISTS (SELECT FROM templates WHERE key = ANY($3::text[])
                      AND locales IS NOT NULL AND locales <> '{}'::jsonb)) AS locales

-- name: insert_rows
-- One row per array position, with the ids read_batch gave. A new notification's
-- inbox position is its id. $10 actions as JSON text (arrays of arrays would have to be
-- rectangular): NULL for a notification without any. $11 every row's created_at (the
-- now() read_batch gave, which need not be this statement's: a batch with nothing else
-- to write runs it outside a transaction). Nothing is read back: the caller knows
-- every column but the defaults, which do not vary. db/notifications.py runs it as a
-- CTE of the statement that appends the rows' events (insert_appending). (Rows with
-- collapse keys go through insert_grouped.)
INSERT INTO notifications
    (id, user_id, type, title, body, link, data, priority, expires_at, position, actions,
     created_at)
OVERRIDING SYSTEM VALUE
SELECT i, u, ty, ti, b, l, d, p, x, i, a::jsonb, $11::timestamptz
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[], $8::text[], $9::timestamptz[], $10::text[])
     AS t(i, u, ty, ti, b, l, d, p, x, a)

-- name: insert_grouped
-- insert_rows for a batch with collapse keys, read back: one row per array position,
-- with the ids read_batch gave and its actions $10 (as in insert_rows); a new notification's
-- inbox position is its id. A row with a collapse key $11 (the batch's creates of one
-- user and key already folded into it: $12 creates, actors $13 newest first as a JSON
-- array, the grouped title and body patterns $14, $15) joins the user's open group with that key
-- if there is one (hub/notifications.py, docs/api.md "Grouping"): count and actors
-- added, title (and body, if the pattern has one) rendered from the grouped patterns,
-- the rest from the newest create, back in the inbox at the top (a fresh position from
-- the id sequence), unseen. A row's returned id is then the group's, not its own.
-- ``old`` locks the open groups first, in (user, key) order, so concurrent batches
-- queue up rather than deadlock, and tells how each was before: was_seen, was_out
-- (archived or snoozed), NULL for a row inserted. An open group another transaction
-- inserts meanwhile is waited for by ON CONFLICT and joined (it is unseen, in the inbox).
WITH input AS (
    SELECT t.*, ARRAY(SELECT jsonb_array_elements_text(t.a::jsonb)) AS aa
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::jsonb[], $8::text[], $9::timestamptz[],
                         $10::text[], $11::text[], $12::int[], $13::text[], $14::text[],
                         $15::text[])
         WITH ORDINALITY AS t(i, u, ty, ti, b, l, d, p, x, ac, k, c, a, gt, gb, n)
), old AS (
    SELECT g.id, g.seen_at IS NOT NULL AS was_seen,
           g.archived_at IS NOT NULL OR g.snoozed_until IS NOT NULL AS was_out
    FROM notifications g JOIN input ON g.user_id = input.u AND g.collapse_key = input.k
    WHERE input.k IS NOT NULL AND g.collapse_key IS NOT NULL AND g.read_at IS NULL
    ORDER BY g.user_id, g.collapse_key
    FOR UPDATE OF g
), ins AS (
    INSERT INTO notifications AS g
        (id, user_id, type, title, body, link, data, priority, expires_at, position,
         actions, collapse_key, group_count, actors)
    OVERRIDING SYSTEM VALUE
    SELECT i, u, ty,
           CASE WHEN c > 1 THEN left(notification_group_text(gt, c, aa), 200)
                ELSE ti END,
           CASE WHEN c > 1 AND gb IS NOT NULL
                THEN left(notification_group_text(gb, c, aa), 2000) ELSE b END,
           l, d, p, x, i, ac::jsonb, k, c, aa
    FROM input, (SELECT count(*) FROM old) AS locked
    ORDER BY n
    ON CONFLICT (user_id, collapse_key) WHERE collapse_key IS NOT NULL AND read_at IS NULL
    DO UPDATE SET
        type = EXCLUDED.type, link = EXCLUDED.link, data = EXCLUDED.data,
        priority = EXCLUDED.priority, expires_at = EXCLUDED.expires_at,
        actions = EXCLUDED.actions,
        group_count = g.group_count + EXCLUDED.group_count,
        actors = notification_group_actors(EXCLUDED.actors, g.actors),
        title = left(notification_group_text(
            (SELECT gt FROM input WHERE input.i = EXCLUDED.id),
            g.group_count + EXCLUDED.group_count,
            notification_group_actors(EXCLUDED.actors, g.actors)), 200),
        body = coalesce(left(notification_group_text(
            (SELECT gb FROM input WHERE input.i = EXCLUDED.id),
            g.group_count + EXCLUDED.group_count,
            notification_group_actors(EXCLUDED.actors, g.actors)), 2000),
            (SELECT b FROM input WHERE input.i = EXCLUDED.id)),
        position = nextval('notifications_id_seq'),
        seen_at = NULL, archived_at = NULL, snoozed_until = NULL
    RETURNING id, user_id, type, title, body, link, data, priority,
              read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
              archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
              created_at, expires_at,
              coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at, collapse_key,
              group_count, actors
)
SELECT ins.*, old.was_seen, old.was_out FROM ins LEFT JOIN old USING (id)

-- name: by_ids
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
       archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
       created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at, collapse_key,
       group_count, actors
FROM notifications WHERE id = ANY($1::bigint[]) ORDER BY id

-- name: page
-- One page of user $1's box $2 ('inbox', 'archived' or 'all') by position, newest
-- first: $3 before (a position, exclusive), $4 read (NULL: either), $5 types and $6
-- priorities (NULL: any), $7 created at or after, $8 created before, $9 ILIKE pattern
-- of the title or body, $10 limit + 1. An expired notification is hidden at once, swept
-- or not.
-- Two arms that differ only in their first line: the inbox's, whose WHERE is the
-- predicate of notifications_inbox_idx, and the archive's or everything's, on
-- notifications_user_idx. The arm $2 does not ask for is skipped at once (a one-time
-- filter), and the other is an index scan in position order that stops at the limit,
-- also in a generic plan (so the cursor is a coalesce, not an IS NULL OR).
(SELECT id, user_id, type, title, body, link, data, priority,
        read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
        archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
        created_at, expires_at,
        coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at, collapse_key,
        group_count, actors
 FROM notifications
 WHERE $2::text = 'inbox' AND archived_at IS NULL AND snoozed_until IS NULL
  AND user_id = $1
  AND (expires_at IS NULL OR expires_at > now())
  AND position < coalesce($3::bigint, 9223372036854775807)
  AND ($4::boolean IS NULL OR (read_at IS NOT NULL) = $4)
  AND ($5::text[] IS NULL OR type = ANY($5))
  AND ($6::text[] IS NULL OR priority = ANY($6))
  AND ($7::timestamptz IS NULL OR created_at >= $7)
  AND ($8::timestamptz IS NULL OR created_at < $8)
  AND ($9::text IS NULL OR title ILIKE $9 OR body ILIKE $9)
 ORDER BY position DESC LIMIT $10)
UNION ALL
(SELECT id, user_id, type, title, body, link, data, priority,
        read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
        archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
        created_at, expires_at,
        coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at, collapse_key,
        group_count, actors
 FROM notifications
 WHERE $2::text <> 'inbox' AND ($2::text = 'all' OR archived_at IS NOT NULL)
  AND user_id = $1
  AND (expires_at IS NULL OR expires_at > now())
  AND position < coalesce($3::bigint, 9223372036854775807)
  AND ($4::boolean IS NULL OR (read_at IS NOT NULL) = $4)
  AND ($5::text[] IS NULL OR type = ANY($5))
  AND ($6::text[] IS NULL OR priority = ANY($6))
  AND ($7::timestamptz IS NULL OR created_at >= $7)
  AND ($8::timestamptz IS NULL OR created_at < $8)
  AND ($9::text IS NULL OR title ILIKE $9 OR body ILIKE $9)
 ORDER BY position DESC LIMIT $10)
ORDER BY position DESC
LIMIT $10

-- name: counts
-- User $1's unread and unseen counts: the inbox's (not archived, snoozed or expired).
-- Every unseen notification is unread (reading sets seen_at too), so both are one
-- index-only scan of notifications_unread_idx.
SELECT count(*) AS unread, count(*) FILTER (WHERE seen_at IS NULL) AS unseen
FROM notifications
WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL AND snoozed_until IS NULL
  AND (expires_at IS NULL OR expires_at > now())

-- name: mark_read
-- Reading implies seeing.
UPDATE notifications SET read_at = now(), seen_at = coalesce(seen_at, now())
WHERE user_id = $1 AND id = ANY($2::bigint[]) AND read_at IS NULL
RETURNING id

-- name: mark_all_read
-- The inbox's unread notifications, those at or below position $2 if given.
UPDATE notifications SET read_at = now(), seen_at = coalesce(seen_at, now())
WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL AND snoozed_until IS NULL
  AND ($2::bigint IS NULL OR position <= $2)
RETURNING id

-- name: delete
DELETE FROM notifications WHERE id = $1 AND user_id = $2 RETURNING id

-- name: delete_any
-- An admin's delete: whoever's it is; returns its user.
DELETE FROM notifications WHERE id = $1 RETURNING user_id

-- name: get
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
       archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
       created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at, collapse_key,
       group_count, actors
FROM notifications WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)

-- name: claim_requests
-- Claim keys $1 with what each request creates: ids $2 and suppressed users $3 (one
-- JSON array as text per key: arrays of arrays would have to be rectangular). Returns
-- the keys that were free. Keys are claimed in sorted order, so two transactions
-- claiming overlapping keys queue up rather than deadlock; a key that another
-- transaction claimed and has not committed yet waits for it.
INSERT INTO notification_requests (idempotency_key, notification_ids, suppressed)
SELECT k, ARRAY(SELECT jsonb_array_elements_text(ids::jsonb)::bigint),
       ARRAY(SELECT jsonb_array_elements_text(sup::jsonb))
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, ids, sup)
ORDER BY k
ON CONFLICT DO NOTHING
RETURNING idempotency_key

-- name: claims_checked
-- A CTE after ``claimed AS (claim_requests)`` in the one statement of a batch without
-- a transaction of its own (db/notifications.py, insert_appending): with every key $1
-- claim_requests took, it stops the statement (SQLSTATE NH001, migration 0016) unless
-- all of them were free. The rows' insert waits for it (WHERE (SELECT ok FROM checked)),
-- and so do the statement's events.
checked AS MATERIALIZED (
    SELECT notification_claims_checked(cardinality($1::text[]),
                                       (SELECT count(*) FROM claimed)) AS ok
)

-- name: get_requests
SELECT idempotency_key, notification_ids, suppressed FROM notification_requests
WHERE idempotency_key = ANY($1::text[])

-- name: prune_read
-- A snoozed notification is kept: it returns unread.
DELETE FROM notifications
WHERE read_at < now() - make_interval(days => $1) AND snoozed_until IS NULL

-- name: prune_requests
-- A key whose scheduled notification still waits is kept: a repeat must not schedule it
-- again.
DELETE FROM notification_requests r
WHERE created_at < now() - make_interval(days => $1)
  AND NOT EXISTS (SELECT 1 FROM scheduled_notifications s
                  WHERE s.idempotency_key = r.idempotency_key)

-- name: resolve_requests
-- A scheduled create's keys $1 now name what it created at send_at: ids $2 and
-- suppressed users $3 (JSON arrays as text, as in claim_requests); kept from now on for
-- HUB_HISTORY_DAYS.
UPDATE notification_requests r
SET notification_ids = ARRAY(SELECT jsonb_array_elements_text(t.ids::jsonb)::bigint),
    suppressed = ARRAY(SELECT jsonb_array_elements_text(t.sup::jsonb)),
    created_at = now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, ids, sup)
WHERE r.idempotency_key = t.k

-- name: delete_for_message
-- The new_message notifications that quote direct message $2.
DELETE FROM notifications
WHERE user_id = $1 AND type = 'new_message' AND data->>'message_id' = $2::bigint::text
RETURNING id

-- name: expire
-- Delete up to $1 expired notifications, oldest expiry first; SKIP LOCKED: instances
-- sweeping at once take different rows. Their deliveries go with them (ON DELETE CASCADE).
WITH due AS (
    SELECT id FROM notifications
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM notifications n USING due WHERE n.id = due.id
RETURNING n.id, n.user_id

-- name: counts_many
-- The counts of each user $1 (as counts).
SELECT u AS user_id, c.unread, c.unseen
FROM unnest($1::text[]) AS u,
     LATERAL (SELECT count(*) AS unread, count(*) FILTER (WHERE seen_at IS NULL) AS unseen
              FROM notifications
              WHERE user_id = u AND read_at IS NULL AND archived_at IS NULL
                AND snoozed_until IS NULL
                AND (expires_at IS NULL OR expires_at > now())) AS c

-- name: for_action
-- Notification $1 if it is user $2's, locked for recording a choice (its row before the
-- user's counter: the order every notification write takes).
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
       archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
       created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at,
       coalesce(expires_at <= now(), false) AS expired
FROM notifications WHERE id = $1 AND user_id = $2
FOR UPDATE

-- name: record_action
-- Record choice $2 on notification $1 (locked by for_action, without one yet), mark it
-- read (and so seen), and queue the choice for the {prefix}actions stream in the same
-- statement.
WITH chosen AS (
    UPDATE notifications
    SET action_id = $2, acted_at = now(), read_at = coalesce(read_at, now()),
        seen_at = coalesce(seen_at, now())
    WHERE id = $1
    RETURNING *
), queued AS (
    INSERT INTO action_outbox (notification_id, user_id, type, action_id, data, acted_at)
    SELECT id, user_id, type, action_id, data, acted_at FROM chosen
)
SELECT id, user_id, type, title, body, link, data, priority,
       read_at IS NOT NULL AS read, read_at, seen_at IS NOT NULL AS seen, seen_at,
       archived_at IS NOT NULL AS archived, archived_at, snoozed_until, position,
       created_at, expires_at,
       coalesce(actions, '[]'::jsonb) AS actions, action_id, acted_at
FROM chosen
