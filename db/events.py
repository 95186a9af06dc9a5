"""The per-user event log: gap-free ``seq`` allocation, replay and pruning."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import asyncpg

from db import deliveries
from db.pool import Conn
from db.queries import load

Q = load("events")


#: Where ``Q.append`` takes its events, and its first CTE reads them.
_EVENTS = "FROM unnest($1::text[], $2::text[], $3::jsonb[])"
#: A CTE's text and the number of its parameters (numbered from $1 in its text).
Cte = tuple[str, int]
#: The batch's rows, for the decision to wait for, when an earlier statement stored them.
_STORED_BEFORE: Cte = ("stored AS (SELECT)", 0)


def _renumbered(text: str, by: int) -> str:
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + by}", text)


@cache
def after(ctes: tuple[Cte, ...], reads: str = "") -> str:
    """``Q.append`` run after ``ctes`` (each ``name AS (...)``) in one statement; their
    parameters are numbered on in order, the events take the three after them.
    ``reads``: the CTEs the events must wait for, comma-separated (their rows are read
    first)."""
    parts, used = [], 0
    for text, params in ctes:
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        parts.append(_renumbered(body, used))
        used += params
    head, found, tail = Q.append.partition("WITH e AS (")
    assert found and tail.count(_EVENTS) == 1, "append changed: update events.after"
    moved = f"${used + 1}::text[], ${used + 2}::text[], ${used + 3}::jsonb[])"
    source = f"FROM {reads + ', ' if reads else ''}unnest({moved}"
    ctes_text = ",\n".join(parts)
    return f"{head}WITH {ctes_text},\ne AS ({tail.replace(_EVENTS, source)}"


async def append(
    conn: asyncpg.Connection, events: list[tuple[str, str, dict[str, Any]]],
    deciding: list[Any] | None = None,
) -> list[tuple[str, int, str, dict[str, Any]]]:
    """Append ``(user_id, type, data)`` events inside the caller's transaction.

    Returns ``(user_id, seq, type, data)`` in the order given; each user's events get
    consecutive seqs following that user's last one. One round trip.

    ``deciding``: the parameters of ``db.deliveries.decide`` (``decide_args``) for
    notifications inserted earlier in the transaction, decided in the same statement,
    before the counters are locked.
    """
    if not events:
        if deciding is not None:
            await deliveries.decide_with(conn, deciding)
        return []
    ctes: list[tuple[Cte, list[Any]]] = [(_STORED_BEFORE, [])] if deciding is not None else []
    return await append_after(conn, ctes, events, deciding=deciding)


async def append_after(
    conn: asyncpg.Connection, ctes: list[tuple[Cte, list[Any]]],
    events: list[tuple[str, str, dict[str, Any]]], *, deciding: list[Any] | None = None,
    reads: tuple[str, ...] = (),
) -> list[tuple[str, int, str, dict[str, Any]]]:
    """``append`` in one statement after ``ctes``, each a CTE and its parameters
    (``after``); with ``deciding`` (as in ``append``), the deliveries are decided after
    them, once a CTE named ``stored`` (the new notifications) is done. ``reads``: the
    names of other CTEs the events read first (one row each)."""
    columns = [e[0] for e in events], [e[1] for e in events], [e[2] for e in events]
    if deciding is not None:
        ctes = [*ctes, ((Q.decided, len(deciding)), deciding)]
        reads = (*reads, "decided")
    statement = after(tuple(cte for cte, _ in ctes), ", ".join(reads)) if ctes else Q.append
    rows = await conn.fetch(statement, *(p for _, params in ctes for p in params), *columns)
    next_seq: dict[str, int] = {}
    for row in rows:
        user, seq = row["user_id"], row["seq"]
        if seq < next_seq.get(user, seq + 1):
            next_seq[user] = seq
    out = []
    for user, type_, data in events:
        seq = next_seq[user]
        next_seq[user] = seq + 1
        out.append((user, seq, type_, data))
    return out


async def lock(conn: asyncpg.Connection, user_ids: list[str]) -> None:
    """Lock the counters of ``user_ids`` in sorted order, inside the caller's transaction.

    Lock order across the hub: counters (sorted) before anything else a transaction
    appends events for; ``append`` alone sorts within one call, so a transaction that
    appends in several steps calls this first.
    """
    await conn.execute(Q.lock_counters, sorted(set(user_ids)))


async def since(
    conn: Conn, user_id: str, after: int, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` events of ``user_id`` with seq > ``after``, oldest first."""
    return await conn.fetch(Q.since, user_id, after, limit)


async def bounds(conn: Conn, user_id: str) -> tuple[int, int | None]:
    """``(last_seq, first kept seq or None)`` of ``user_id``."""
    row = await conn.fetchrow(Q.bounds, user_id)
    assert row is not None
    return row["last_seq"], row["first_seq"]


async def heads(conn: Conn, user_ids: list[str]) -> dict[str, int]:
    """The newest seq of each of ``user_ids`` that has any event."""
    return {r["user_id"]: r["last_seq"] for r in await conn.fetch(Q.heads, user_ids)}


async def prune(conn: Conn, days: int, keep: int, timeout: float | None = None) -> int:
    """Delete events older than ``days`` beyond each user's newest ``keep``; return count.

    ``timeout`` (seconds) replaces the pool's statement timeout for the statement.
    """
    status = await conn.execute(Q.prune, days, keep, timeout=timeout)
    return int(status.split()[-1])
