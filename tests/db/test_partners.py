"""Conversation partners, as presence finds them (db.messages.partners, partners_among)."""

from __future__ import annotations

from db import messages
from db.pool import create_pool


async def send(pool, rows: list[tuple[str, str]]) -> None:
    """Store a message ``sender -> recipient`` for each pair, in order."""
    async with pool.acquire() as conn, conn.transaction():
        await messages.insert_many(conn, [(s, r, "hi", None) for s, r in rows])


async def test_partners_are_the_most_recent_both_ways_within_the_bounds(database_url):
    pool = await create_pool(database_url)
    try:
        # ann writes to p0..p9, then hears from q0..q4; p3 writes back last of all.
        await send(pool, [("ann", f"p{i}") for i in range(10)])
        await send(pool, [(f"q{i}", "ann") for i in range(5)])
        await send(pool, [("p3", "ann"), ("zed", "eve")])
        found = await messages.partners(pool, ["ann", "eve", "nobody"], recent=1000, limit=4)
        assert found == {"ann": ["p3", "q4", "q3", "q2"], "eve": ["zed"]}
        # Only the newest `recent` messages each way are looked at.
        found = await messages.partners(pool, ["ann"], recent=2, limit=200)
        assert found == {"ann": ["p3", "q4", "p9", "p8"]}
    finally:
        await pool.close()


async def test_partners_among_counts_either_direction_and_nobody_else(database_url):
    pool = await create_pool(database_url)
    try:
        await send(pool, [("ann", "bob"), ("cid", "ann"), ("bob", "cid")])
        assert await messages.partners_among(pool, "ann", ["bob", "cid", "dan", "ann"]) == {
            "bob", "cid"
        }
    finally:
        await pool.close()
