-- name: insert_many
-- Rows ($1 senders, $2 recipients, $3 bodies, $4 client_ids) get new ids, ascending in
-- their order; a row whose sender already used its client_id is skipped (the caller
-- reads the original). A concurrent insert of the same pair waits for the first to
-- commit (or roll back) before deciding; rows are inserted in (sender, client_id)
-- order, so two batches repeating the same pairs queue up rather than deadlock. One
-- row per row given, in order: the stored message, or NULLs for a skipped one.
WITH given AS (
    SELECT nextval('direct_messages_id_seq') AS id, t.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
        AS t(sender_id, recipient_id, body, client_id, n)
), stored AS (
    INSERT INTO direct_messages (id, sender_id, recipient_id, body, client_id)
    OVERRIDING SYSTEM VALUE
    SELECT id, sender_id, recipient_id, body, client_id FROM given
    ORDER BY sender_id, client_id
    ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id, sender_id, recipient_id, body, client_id, created_at, read_at
)
SELECT s.id, s.sender_id, s.recipient_id, s.body, s.client_id, s.created_at, s.read_at
FROM given g LEFT JOIN stored s ON s.id = g.id
ORDER BY g.n

-- name: insert_checked
-- CTEs of the one statement of a send batch without a transaction of its own
-- (db/messages.py, inserting): store messages with the ids read_batch gave ($1 ids,
-- $2 senders, $3 recipients, $4 bodies, $5 client_ids; $6 the created_at of all,
-- read_batch's now()), then stop the statement (SQLSTATE NH001, migration 0016) unless
-- every one was stored: a sender had used its client_id before. The notifications'
-- insert waits for the check (WHERE (SELECT ok FROM checked)), and so do the events.
sent AS (
    INSERT INTO direct_messages (id, sender_id, recipient_id, body, client_id, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT i, s, r, b, c, $6::timestamptz
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS t(i, s, r, b, c)
    ORDER BY s, c  -- as insert_many: batches repeating the same pairs queue up
    ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id
), checked AS MATERIALIZED (
    SELECT notification_claims_checked(cardinality($1::bigint[]),
                                       (SELECT count(*) FROM sent)) AS ok
)

-- name: by_client_ids
SELECT m.id, m.sender_id, m.recipient_id, m.body, m.client_id, m.created_at, m.read_at
FROM direct_messages m
JOIN unnest($1::text[], $2::text[]) AS t(s, c) ON m.sender_id = t.s AND m.client_id = t.c

-- name: conversations
-- The caller's conversations, newest last message first, with what they have not
-- read. Messages hidden for the caller do not exist for them.
WITH mine AS (
    SELECT id, sender_id, recipient_id, body, client_id, created_at, read_at,
           CASE WHEN sender_id = $1 THEN recipient_id ELSE sender_id END AS other
    FROM direct_messages
    WHERE (sender_id = $1 AND NOT hidden_for_sender)
       OR (recipient_id = $1 AND NOT hidden_for_recipient)
), latest AS (
    SELECT DISTINCT ON (other) * FROM mine ORDER BY other, id DESC
), unread AS (
    SELECT other, count(*) AS n FROM mine
    WHERE recipient_id = $1 AND read_at IS NULL
    GROUP BY other
)
SELECT l.id, l.sender_id, l.recipient_id, l.body, l.client_id, l.created_at, l.read_at,
       l.other, coalesce(u.n, 0) AS unread_count
FROM latest l LEFT JOIN unread u USING (other)
ORDER BY l.id DESC
LIMIT $2

-- name: page
-- Messages between $1 (the caller) and $2, newest first, below id $3 when given;
-- the LEAST/GREATEST pair matches direct_messages_pair_idx. $4 is limit + 1.
SELECT id, sender_id, recipient_id, body, client_id, created_at, read_at
FROM direct_messages
WHERE LEAST(sender_id, recipient_id) = LEAST($1::text, $2::text)
  AND GREATEST(sender_id, recipient_id) = GREATEST($1::text, $2::text)
  AND ($3::bigint IS NULL OR id < $3)
  AND ((sender_id = $1 AND NOT hidden_for_sender)
       OR (recipient_id = $1 AND NOT hidden_for_recipient))
ORDER BY id DESC
LIMIT $4

-- name: mark_read_ids
UPDATE direct_messages SET read_at = now()
WHERE recipient_id = $1 AND id = ANY($2::bigint[])
  AND read_at IS NULL AND NOT hidden_for_recipient
RETURNING id, sender_id

-- name: mark_read_from
UPDATE direct_messages SET read_at = now()
WHERE recipient_id = $1 AND sender_id = $2
  AND read_at IS NULL AND NOT hidden_for_recipient
RETURNING id, sender_id

-- name: visible_for_update
-- Message $1 if it is still visible to $2, locked until the transaction ends.
SELECT id, sender_id, recipient_id, hidden_for_sender, hidden_for_recipient
FROM direct_messages
WHERE id = $1
  AND ((sender_id = $2 AND NOT hidden_for_sender)
       OR (recipient_id = $2 AND NOT hidden_for_recipient))
FOR UPDATE

-- name: hide
-- Hide message $1 for $2 on whichever side of it they are.
UPDATE direct_messages
SET hidden_for_sender = hidden_for_sender OR sender_id = $2,
    hidden_for_recipient = hidden_for_recipient OR recipient_id = $2
WHERE id = $1

-- name: delete
DELETE FROM direct_messages WHERE id = $1

-- name: partners
-- For each user of $1, the other parties of their newest $2 sent and newest $2
-- received messages (hidden ones too), at most $3 of them, most recent first: two
-- bounded scans of direct_messages_sender_idx / _recipient_idx per user.
SELECT u.user_id, p.partner
FROM unnest($1::text[]) AS u(user_id)
CROSS JOIN LATERAL (
    SELECT recent.partner
    FROM (
        (SELECT recipient_id AS partner, id FROM direct_messages
         WHERE sender_id = u.user_id ORDER BY id DESC LIMIT $2)
        UNION ALL
        (SELECT sender_id, id FROM direct_messages
         WHERE recipient_id = u.user_id ORDER BY id DESC LIMIT $2)
    ) AS recent
    GROUP BY recent.partner
    ORDER BY max(recent.id) DESC
    LIMIT $3
) AS p

-- name: partners_among
-- Those of $2 who exchanged a direct message with $1, either way (hidden ones count);
-- one probe of direct_messages_pair_idx each.
SELECT o.id
FROM unnest($2::text[]) AS o(id)
WHERE EXISTS (
    SELECT 1 FROM direct_messages
    WHERE LEAST(sender_id, recipient_id) = LEAST($1::text, o.id)
      AND GREATEST(sender_id, recipient_id) = GREATEST($1::text, o.id)
)
