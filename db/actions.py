"""The outbox of the ``{prefix}actions`` stream: action choices waiting to be relayed."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("actions")


async def claim(conn: Conn, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` queued choices for ``lease_seconds``, oldest first; rows
    another relay leased are left to it until its lease ends. Each: ``id``,
    ``notification_id``, ``user_id``, ``type``, ``action_id``, ``data``, ``acted_at``."""
    rows = await conn.fetch(Q.claim, limit, lease_seconds)
    return sorted((dict(r) for r in rows), key=lambda r: r["id"])


async def delete(conn: Conn, ids: list[int]) -> None:
    """Forget choices ``ids``: they are on the stream."""
    await conn.execute(Q.delete, ids)


async def release(conn: Conn, ids: list[int]) -> None:
    """End the lease of choices ``ids`` (not appended): any relay may take them now."""
    await conn.execute(Q.release, ids)


async def prune(conn: Conn, days: int, timeout: float | None = None) -> int:
    """Give up choices not relayed within ``days``; return how many."""
    status = await conn.execute(Q.prune, days, timeout=timeout)
    return int(status.split()[-1])
