"""Stored notifications and idempotent create requests."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("notifications")


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, with ``%``, ``_`` and ``\\`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def insert_many(
    conn: Conn,
    user_ids: list[str],
    type_: str,
    title: str,
    body: str,
    link: str | None,
    data: dict[str, Any],
    priority: str,
) -> list[dict[str, Any]]:
    """Insert one notification per user, in the order given; return the rows."""
    rows = await conn.fetch(Q.insert_many, user_ids, type_, title, body, link, data, priority)
    return [dict(r) for r in rows]


async def by_ids(conn: Conn, ids: list[int]) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q.by_ids, ids)]


async def page(
    conn: Conn,
    user_id: str,
    *,
    before: int | None,
    unread_only: bool,
    type_: str | None,
    query: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` notifications newest first, and the cursor of the next page."""
    pattern = like_pattern(query) if query else None
    rows = await conn.fetch(Q.page, user_id, before, unread_only, type_, pattern, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    next_before = items[-1]["id"] if len(rows) > limit else None
    return items, next_before


async def unread_count(conn: Conn, user_id: str) -> int:
    return int(await conn.fetchval(Q.unread_count, user_id))


async def mark_read(conn: Conn, user_id: str, ids: list[int]) -> list[int]:
    """Mark those of ``ids`` that are ``user_id``'s and unread; return the ids changed."""
    return sorted(r["id"] for r in await conn.fetch(Q.mark_read, user_id, ids))


async def mark_all_read(conn: Conn, user_id: str, upto: int | None) -> list[int]:
    """Mark every unread notification (with id <= ``upto`` if given); return the ids."""
    return sorted(r["id"] for r in await conn.fetch(Q.mark_all_read, user_id, upto))


async def delete(conn: Conn, user_id: str, id_: int) -> bool:
    return await conn.fetchval(Q.delete, id_, user_id) is not None


async def delete_for_message(conn: Conn, user_id: str, message_id: int) -> list[int]:
    """Delete ``user_id``'s ``new_message`` notifications about ``message_id``; their ids."""
    return [r["id"] for r in await conn.fetch(Q.delete_for_message, user_id, message_id)]


async def claim_request(conn: Conn, key: str) -> bool:
    """Claim idempotency ``key`` in this transaction; False if it was used before.

    A concurrent claim of the same key waits for this transaction and then gets False.
    """
    return await conn.fetchval(Q.claim_request, key) is not None


async def get_request(conn: Conn, key: str) -> tuple[list[int], list[str]]:
    row = await conn.fetchrow(Q.get_request, key)
    assert row is not None
    return list(row["notification_ids"]), list(row["suppressed"])


async def finish_request(conn: Conn, key: str, ids: list[int], suppressed: list[str]) -> None:
    await conn.execute(Q.finish_request, key, ids, suppressed)


async def prune(conn: Conn, retention_days: int, request_days: int) -> int:
    """Delete read notifications older than ``retention_days``; return how many."""
    status = await conn.execute(Q.prune_read, retention_days)
    await conn.execute(Q.prune_requests, request_days)
    return int(status.split()[-1])
