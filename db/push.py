"""Stored web push subscriptions (one row per browser ``PushSubscription``)."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("push")


async def upsert(
    conn: Conn, user_id: str, endpoint: str, p256dh: str, auth: str, user_agent: str | None,
    *, keep: int,
) -> dict[str, Any]:
    """Store the subscription for ``user_id`` (taking over ``endpoint`` from anyone) and
    keep only their newest ``keep``; the stored row (id, user_id, endpoint, created_at)."""
    row = dict(await conn.fetchrow(Q.upsert, user_id, endpoint, p256dh, auth, user_agent))
    await conn.execute(Q.trim, user_id, keep)
    return row


async def delete_for_user(conn: Conn, user_id: str, endpoint: str) -> bool:
    """Delete ``user_id``'s subscription with ``endpoint``; whether there was one."""
    return await conn.fetchval(Q.delete_for_user, user_id, endpoint) is not None


async def for_user(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    """``user_id``'s subscriptions (id, endpoint, p256dh, auth), newest first."""
    return [dict(r) for r in await conn.fetch(Q.for_user, user_id)]


async def delete_ids(conn: Conn, ids: list[int]) -> None:
    if ids:
        await conn.execute(Q.delete_ids, ids)


async def touch(conn: Conn, ids: list[int]) -> None:
    """Record that the push service accepted a push for these subscriptions just now."""
    if ids:
        await conn.execute(Q.touch, ids)


async def count_for_user(conn: Conn, user_id: str) -> int:
    return int(await conn.fetchval(Q.count_for_user, user_id))
