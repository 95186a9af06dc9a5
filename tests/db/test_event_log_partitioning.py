"""The event-log partitioning procedure of docs/scaling.md, run as written.

The SQL is read from the page (its dates moved to a few seconds from now), and run on
a database that keeps appending events through the hub's statements the whole time.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from db import events
from db.pool import create_pool

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
DATE = re.compile(r"'(\d{4}-\d{2}-\d{2}) 00:00\+00'")
#: The page's T, and the one instant its other dates are counted from.
DOC_T = date(2026, 12, 7)


def procedure(cutover: datetime) -> list[list[str]]:
    """The page's four steps, each a list of statements, with ``cutover`` as T."""
    text = DOC.read_text()
    section = text[text.index("**The procedure**"):text.index("The hourly prune keeps running")]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(blocks) == 4, "the procedure's four steps"

    def moved(match: re.Match[str]) -> str:
        days = (date.fromisoformat(match.group(1)) - DOC_T).days
        return f"'{(cutover + timedelta(days=days)).isoformat()}'"

    steps = []
    for block in blocks:
        sql = re.sub(r"--[^\n]*", "", DATE.sub(moved, block))
        steps.append([s.strip() for s in sql.split(";") if s.strip()])
    return steps


async def test_the_documented_partitioning_keeps_appends_going_and_drops_old_weeks(
    database_url: str,
) -> None:
    pool = await create_pool(database_url)
    admin = await asyncpg.connect(database_url)
    stop = asyncio.Event()
    appended: list[tuple[str, int]] = []

    async def append_all_along() -> None:
        # The pool's connections keep their prepared statements across the swap.
        n = 0
        while not stop.is_set():
            async with pool.acquire() as conn, conn.transaction():
                out = await events.append(conn, [(f"u{n % 5}", "t", {"n": n})])
            appended.extend((user, seq) for user, seq, _, _ in out)
            n += 1
            await asyncio.sleep(0.005)

    try:
        cutover = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
        step1, step2, step3, step4 = procedure(cutover)
        writer = asyncio.create_task(append_all_along())
        for statement in step1 + step2:
            await admin.execute(statement)
        # Past T: appends now belong in the first weekly partition.
        await asyncio.sleep(max(0.0, (cutover - datetime.now(UTC)).total_seconds()) + 0.5)
        for statement in step3:
            await admin.execute(statement)
        count = len(appended)
        async with asyncio.timeout(20):  # appends after T, into the first week
            while len(appended) < count + 20:
                assert not writer.done(), writer  # its appends failed: it ended early
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(writer, timeout=10)

        where = dict(await admin.fetch(
            "SELECT tableoid::regclass::text, count(*) FROM user_events GROUP BY 1"))
        week1 = f"user_events_{DOC_T:%Y%m%d}"  # the names stay the page's
        assert set(where) == {"user_events_old", week1}
        assert sum(where.values()) == len(appended)
        # Every user's seqs are still 1, 2, 3, ... in one log over the partitions.
        for user in {u for u, _ in appended}:
            seqs = [s for u, s in appended if u == user]
            assert seqs == list(range(1, len(seqs) + 1))
            rows = await events.since(pool, user, 0, 10_000)
            assert [r["seq"] for r in rows] == seqs
            assert await events.bounds(pool, user) == (seqs[-1], 1)
        async with pool.acquire() as conn:
            assert await events.prune(conn, 7, 1000) == 0

        for statement in step4:
            await admin.execute(statement)
        assert set(dict(await admin.fetch(
            "SELECT tableoid::regclass::text, count(*) FROM user_events GROUP BY 1"
        ))) == {week1}
        # The dropped week's events are gone: a position before them reads as pruned.
        last, first = await events.bounds(pool, "u0")
        assert first is not None and first > 1 and last == max(s for u, s in appended
                                                                   if u == "u0")
    finally:
        stop.set()
        await admin.close()
        await pool.close()
