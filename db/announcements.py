"""Stored announcements and the claim that makes each one announced exactly once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("announcements")


async def insert(
    conn: Conn,
    title: str,
    body: str,
    level: str,
    starts_at: datetime | None,
    ends_at: datetime | None,
) -> tuple[dict[str, Any], bool]:
    """Store an announcement (``starts_at`` None = now); return it and whether it started.

    One that has started is stored as already announced: its creator broadcasts it.
    """
    row = await conn.fetchrow(Q.insert, title, body, level, starts_at, ends_at)
    assert row is not None
    item = dict(row)
    started = item.pop("announced")
    return item, started


async def active(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Announcements running now, most recently started first."""
    return [dict(r) for r in await conn.fetch(Q.active, limit)]


async def current_and_scheduled(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Announcements running now or starting later, latest start first."""
    return [dict(r) for r in await conn.fetch(Q.current_and_scheduled, limit)]


async def delete(conn: Conn, id_: int) -> bool:
    return await conn.fetchval(Q.delete, id_) is not None


async def claim_due(conn: Conn) -> list[tuple[dict[str, Any], bool]]:
    """Mark every started, unannounced announcement announced; return ``(row, active)``.

    Each row is returned to exactly one caller across all instances; ``active`` is False
    for one that already ended before it was claimed (the hub was down at its start).
    """
    out = []
    for record in await conn.fetch(Q.claim_due):
        row = dict(record)
        is_active = row.pop("active")
        out.append((row, is_active))
    return out


async def seconds_to_next(conn: Conn) -> float | None:
    """Seconds until the next unannounced announcement starts (negative if overdue)."""
    value = await conn.fetchval(Q.seconds_to_next)
    return None if value is None else float(value)
