"""The user directory: each user's email, phone, locale and time zone (docs/delivery.md)."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("contacts")
FIELDS = ("email", "phone", "locale", "time_zone")


async def get(conn: Conn, user_id: str) -> dict[str, Any] | None:
    """``user_id``'s stored contact, or None."""
    row = await conn.fetchrow(Q.get, user_id)
    return None if row is None else dict(row)


async def put(conn: Conn, user_id: str, contact: dict[str, Any]) -> dict[str, Any]:
    """Store ``contact`` whole (missing fields cleared); return what was stored."""
    row = await conn.fetchrow(Q.put, user_id, *(contact.get(f) for f in FIELDS))
    return dict(row)


async def delete(conn: Conn, user_id: str) -> bool:
    """Delete ``user_id``'s contact; whether there was one."""
    return await conn.fetchval(Q.delete, user_id) is not None


async def merge_many(conn: Conn, contacts: dict[str, dict[str, Any]]) -> None:
    """Upsert ``user_id -> fields`` in one statement; fields absent or None are kept."""
    if not contacts:
        return
    users = sorted(contacts)
    await conn.execute(
        Q.merge_many, users, *([contacts[u].get(f) for u in users] for f in FIELDS)
    )


async def time_zones(conn: Conn) -> frozenset[str]:
    """Every time zone name PostgreSQL knows (slow: read it once)."""
    return frozenset(r["name"] for r in await conn.fetch(Q.time_zones))
