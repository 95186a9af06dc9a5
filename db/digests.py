"""Digest jobs (docs/delivery.md, "Digests"): building a user's digest for one period.

The job and its emails are ``deliveries`` rows (``db.deliveries`` decides, claims and
records them); this module reads what a digest holds and moves pending digests when
the user's settings change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.pool import Conn, Pool
from db.queries import load

Q = load("digests")


@dataclass(frozen=True, slots=True)
class Contents:
    """What one digest holds: ``total`` unread notifications, ``counts`` per type (the
    type with the newest first) and the ``items`` listed (newest first)."""

    total: int
    counts: list[tuple[str, int]]
    items: list[dict[str, Any]]


async def build(pool: Pool, user_id: str, digest_at: datetime, attempt: int, *,
                max_items: int, max_types: int) -> Contents:
    """The digest of ``user_id`` for the period ending ``digest_at``, as attempt
    ``attempt`` builds it: its notifications read or expired by now are left out for
    good (their emails ``skipped``), in the same transaction that reads the rest."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q.leave_out, user_id, digest_at, attempt)
        total = int(await conn.fetchval(Q.total, user_id, digest_at))
        if not total:
            return Contents(0, [], [])
        counts = [(r["type"], r["count"])
                  for r in await conn.fetch(Q.counts, user_id, digest_at, max_types)]
        items = [dict(r) for r in await conn.fetch(Q.items, user_id, digest_at, max_items)]
    return Contents(total, counts, items)


async def flush(conn: Conn, user_id: str) -> int:
    """Make ``user_id``'s digests that have not begun due now; how many."""
    return int(await conn.fetchval(Q.flush, user_id))


async def cancel(conn: Conn, user_id: str, reason: str) -> int:
    """Skip ``user_id``'s digests that have not begun (and their emails); how many."""
    return int(await conn.fetchval(Q.cancel, user_id, reason))
