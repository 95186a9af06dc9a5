"""Stored direct messages: idempotent insert, conversations, paging, read and hide."""

from __future__ import annotations

from typing import Any

from db.events import Cte
from db.pool import Conn
from db.queries import load

Q = load("messages")

MESSAGE_FIELDS = ("id", "sender_id", "recipient_id", "body", "client_id", "created_at", "read_at")


#: A message to insert: ``(sender_id, recipient_id, body, client_id)``.
Row = tuple[str, str, str, str | None]


async def insert_many(conn: Conn, rows: list[Row]) -> list[dict[str, Any] | None]:
    """Store ``rows`` with new ids (ascending in their order), in one statement; one
    result per row: the stored message, or None when its sender already used its
    client_id (see ``by_client_ids``)."""
    if not rows:
        return []
    columns = [list(column) for column in zip(*rows, strict=True)]
    return [None if r["id"] is None else dict(r)
            for r in await conn.fetch(Q.insert_many, *columns)]


#: ``Q.insert_checked`` as a CTE of ``db.notifications.insert_appending``.
_INSERTED: Cte = (Q.insert_checked, 6)


def inserting(messages: list[dict[str, Any]]) -> tuple[Cte, list[Any]]:
    """The CTEs (and their parameters) that store ``messages`` (every field of
    ``MESSAGE_FIELDS`` but ``read_at``; ids from ``read_batch``, one ``created_at``) in
    the statement that stores their notifications and logs their events
    (``db.notifications.insert_appending``, its ``checked``), which they stop with
    ``ClaimTaken``, having written nothing, unless every message was stored: a sender
    had used its client_id before (``insert_many`` then tells which)."""
    columns = [[m[name] for m in messages]
               for name in ("id", "sender_id", "recipient_id", "body", "client_id")]
    return _INSERTED, [*columns, messages[0]["created_at"]]


async def by_client_ids(
    conn: Conn, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The messages that still exist among ``(sender_id, client_id)`` pairs, by pair."""
    rows = await conn.fetch(Q.by_client_ids, [s for s, _ in pairs], [c for _, c in pairs])
    return {(r["sender_id"], r["client_id"]): dict(r) for r in rows}


async def conversations(conn: Conn, user_id: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` of ``user_id``'s conversations, newest last message first.

    Each is ``{"user_id": other, "last_message": message, "unread_count": n}``.
    """
    rows = await conn.fetch(Q.conversations, user_id, limit)
    return [
        {
            "user_id": r["other"],
            "last_message": {name: r[name] for name in MESSAGE_FIELDS},
            "unread_count": int(r["unread_count"]),
        }
        for r in rows
    ]


async def page(
    conn: Conn, user_id: str, other_id: str, *, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` messages between the two, newest first, and the next cursor."""
    rows = await conn.fetch(Q.page, user_id, other_id, before, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    next_before = items[-1]["id"] if len(rows) > limit else None
    return items, next_before


async def mark_read(
    conn: Conn, user_id: str, *, ids: list[int] | None = None, sender_id: str | None = None
) -> list[tuple[int, str]]:
    """Mark unread messages ``user_id`` received (by ``ids``, or all from ``sender_id``).

    Returns ``(id, sender_id)`` of each message changed, by id.
    """
    if ids is not None:
        rows = await conn.fetch(Q.mark_read_ids, user_id, ids)
    else:
        rows = await conn.fetch(Q.mark_read_from, user_id, sender_id)
    return sorted((r["id"], r["sender_id"]) for r in rows)


async def visible_for_update(conn: Conn, user_id: str, id_: int) -> dict[str, Any] | None:
    """Message ``id_`` if ``user_id`` can still see it, row-locked for this transaction."""
    row = await conn.fetchrow(Q.visible_for_update, id_, user_id)
    return None if row is None else dict(row)


async def hide(conn: Conn, user_id: str, id_: int) -> None:
    """Hide message ``id_`` for ``user_id`` only."""
    await conn.execute(Q.hide, id_, user_id)


async def delete(conn: Conn, id_: int) -> None:
    """Remove message ``id_`` for both parties."""
    await conn.execute(Q.delete, id_)


async def partners(
    conn: Conn, user_ids: list[str], *, recent: int, limit: int
) -> dict[str, list[str]]:
    """Each user's conversation partners among their newest ``recent`` sent and
    ``recent`` received messages, at most ``limit``, most recent first (users without
    any are left out)."""
    found: dict[str, list[str]] = {}
    for r in await conn.fetch(Q.partners, user_ids, recent, limit):
        found.setdefault(r["user_id"], []).append(r["partner"])
    return found


async def partners_among(conn: Conn, user_id: str, others: list[str]) -> set[str]:
    """Those of ``others`` who exchanged a direct message with ``user_id``."""
    return {r["id"] for r in await conn.fetch(Q.partners_among, user_id, others)}
