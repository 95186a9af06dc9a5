"""Scheduled notifications: stored until ``send_at``, then taken by one create transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.pool import Conn, dumps
from db.queries import load

Q = load("scheduled")

#: A scheduled notification to store: ``(id, send_at, user_ids, type, title, body, link,
#: data, priority, expires_at, idempotency_key, localized, actions, collapse_key, actor,
#: grouped_title, grouped_body)``, its id from ``notifications.read_batch``;
#: ``localized``: ``{user: (title, body, link)}`` of the recipients whose locale picked a
#: template variant, followed by their grouped title and body patterns when the
#: notification has a collapse key; ``actions`` None: it has none; the grouped patterns
#: (``hub.templates.grouped``) are None without a collapse key.
Row = tuple[int, datetime, list[str], str, str, str, str | None, dict[str, Any], str,
            datetime | None, str | None, dict[str, Any], list[dict[str, Any]] | None,
            str | None, str | None, str | None, str | None]


def _item(record: Any) -> dict[str, Any]:
    item = dict(record)
    item["user_ids"] = list(item["user_ids"])
    return item


async def insert_rows(conn: Conn, rows: list[Row]) -> list[dict[str, Any]]:
    """Store ``rows`` in one statement, in the order given; return them as the API shows them."""
    if not rows:
        return []
    columns: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)]
    columns[2] = [dumps(users) for users in columns[2]]  # arrays of arrays must be rectangular
    columns[12] = [None if actions is None else dumps(actions) for actions in columns[12]]
    return [_item(r) for r in await conn.fetch(Q.insert_rows, *columns)]


async def by_ids(conn: Conn, ids: list[int]) -> list[dict[str, Any]]:
    """The scheduled notifications among ``ids`` (those not sent or cancelled yet)."""
    return [_item(r) for r in await conn.fetch(Q.by_ids, ids)]


async def page(
    conn: Conn, user_id: str | None, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` waiting notifications (of ``user_id`` if given), newest first, and
    the cursor of the next page."""
    rows = await conn.fetch(Q.page, user_id, before, limit + 1)
    items = [_item(r) for r in rows[:limit]]
    return items, items[-1]["id"] if len(rows) > limit else None


async def cancel(conn: Conn, id_: int) -> bool:
    """Delete scheduled notification ``id_``; False if there is none (sent, cancelled, or
    never scheduled). Waits for a transaction sending it, and then finds it gone."""
    return await conn.fetchval(Q.cancel, id_) is not None


async def claim_due(conn: Conn, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due rows for ``lease_seconds``, soonest first; rows another
    instance leased are left to it until its lease ends."""
    return [_item(r) for r in await conn.fetch(Q.claim_due, limit, lease_seconds)]


async def take(conn: Conn, ids: list[int]) -> dict[int, bool]:
    """Inside the caller's transaction, delete rows ``ids`` that no other transaction
    holds: ``id -> still to be sent`` (False: it expired first). A row missing from the
    answer was sent or cancelled by someone else, or is being."""
    if not ids:
        return {}
    return {r["id"]: r["live"] for r in await conn.fetch(Q.take, ids)}


async def drop(conn: Conn, ids: list[int]) -> None:
    """Delete rows ``ids`` that can never be sent."""
    await conn.execute(Q.drop, ids)


async def seconds_to_next(conn: Conn) -> float | None:
    """Seconds until a row is due, or its lease ends (negative if overdue); None if none."""
    value = await conn.fetchval(Q.seconds_to_next)
    return None if value is None else float(value)
