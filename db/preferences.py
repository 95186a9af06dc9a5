"""Stored per-user preferences (one jsonb document per user)."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("preferences")


async def get(conn: Conn, user_id: str) -> dict[str, Any] | None:
    """The stored document of ``user_id``, or None if they never saved one."""
    value = await conn.fetchval(Q.get, user_id)
    return value if value is None else dict(value)


async def get_for_update(conn: Conn, user_id: str, default: dict[str, Any]) -> dict[str, Any]:
    """``user_id``'s document (``default`` stored if none), locked until the transaction ends."""
    return dict(await conn.fetchval(Q.get_for_update, user_id, default))


async def get_many(conn: Conn, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Stored documents of those ``user_ids`` that have one."""
    return {r["user_id"]: r["prefs"] for r in await conn.fetch(Q.get_many, user_ids)}


async def put(conn: Conn, user_id: str, prefs: dict[str, Any]) -> dict[str, Any]:
    value = await conn.fetchval(Q.put, user_id, prefs)
    return dict(value)
