"""Stored direct messages: idempotent insert, conversations, paging, read and hide."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("messages")

MESSAGE_FIELDS = ("id", "sender_id", "recipient_id", "body", "client_id", "created_at", "read_at")


async def insert(
    conn: Conn, sender_id: str, recipient_id: str, body: str, client_id: str | None
) -> dict[str, Any] | None:
    """Store a message; None if ``sender_id`` already used ``client_id`` (see by_client_id)."""
    row = await conn.fetchrow(Q.insert, sender_id, recipient_id, body, client_id)
    return None if row is None else dict(row)


async def by_client_id(conn: Conn, sender_id: str, client_id: str) -> dict[str, Any] | None:
    """The message ``sender_id`` sent with ``client_id``, if it still exists."""
    row = await conn.fetchrow(Q.by_client_id, sender_id, client_id)
    return None if row is None else dict(row)


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
