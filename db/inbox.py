"""The inbox's states beside read: seen, archived and snoozed (``queries/inbox.sql``).

Each change runs inside the caller's transaction and returns the ids it changed, in id
order; the caller records the event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.notifications import item
from db.pool import Conn
from db.queries import load

Q = load("inbox")


async def _ids(conn: Conn, query: str, *args: Any) -> list[int]:
    return sorted(r["id"] for r in await conn.fetch(query, *args))


async def seen(conn: Conn, user_id: str, ids: list[int] | None, upto: int | None) -> list[int]:
    """Mark ``ids`` (any box), or the inbox up to position ``upto``, seen."""
    if ids is not None:
        return await _ids(conn, Q.seen, user_id, ids)
    return await _ids(conn, Q.seen_upto, user_id, upto)


async def archive(
    conn: Conn, user_id: str, ids: list[int] | None, upto: int | None
) -> list[int]:
    """Archive ``ids`` (a snoozed one stops being snoozed), or the inbox up to ``upto``."""
    if ids is not None:
        return await _ids(conn, Q.archive, user_id, ids)
    return await _ids(conn, Q.archive_upto, user_id, upto)


async def unarchive(
    conn: Conn, user_id: str, ids: list[int] | None, upto: int | None
) -> list[int]:
    """Move ``ids``, or the archive up to position ``upto``, back to the inbox."""
    if ids is not None:
        return await _ids(conn, Q.unarchive, user_id, ids)
    return await _ids(conn, Q.unarchive_upto, user_id, upto)


async def snooze(conn: Conn, user_id: str, id_: int, until: datetime) -> datetime | None:
    """Snooze ``user_id``'s notification ``id_`` until ``until``; None if it is not
    theirs, or it expires by then."""
    row = await conn.fetchrow(Q.snooze, user_id, id_, until)
    return None if row is None else row["snoozed_until"]


async def return_due(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Return up to ``limit`` snoozed notifications whose time has come to the inbox
    (rows other transactions hold are left for later); each as the inbox shows it."""
    return [item(r) for r in await conn.fetch(Q.return_due, limit)]


async def seconds_to_return(conn: Conn) -> float | None:
    """Seconds until a snoozed notification returns (negative if overdue); None if none."""
    value = await conn.fetchval(Q.seconds_to_return)
    return None if value is None else float(value)
