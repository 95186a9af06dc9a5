"""The per-user event log: gap-free seq in commit order, replay, pruning."""

from __future__ import annotations

import asyncio

from db import events
from db.pool import create_pool


async def append_in_tx(pool, batch):
    async with pool.acquire() as conn, conn.transaction():
        return await events.append(conn, batch)


async def test_each_user_gets_consecutive_seqs(database_url):
    pool = await create_pool(database_url)
    try:
        out = await append_in_tx(pool, [("a", "t", {}), ("b", "t", {}), ("a", "t", {"n": 2})])
        assert [(u, s) for u, s, _, _ in out] == [("a", 1), ("b", 1), ("a", 2)]
        out = await append_in_tx(pool, [("a", "t", {})])
        assert out[0][1] == 3
        rows = await events.since(pool, "a", 1, 10)
        assert [(r["seq"], r["data"]) for r in rows] == [(2, {"n": 2}), (3, {})]
    finally:
        await pool.close()


async def test_rolled_back_transaction_leaves_no_gap(database_url):
    pool = await create_pool(database_url)
    try:
        await append_in_tx(pool, [("a", "t", {})])
        try:
            async with pool.acquire() as conn, conn.transaction():
                await events.append(conn, [("a", "t", {})])
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        out = await append_in_tx(pool, [("a", "t", {})])
        assert out[0][1] == 2
    finally:
        await pool.close()


async def test_concurrent_multi_user_batches_do_not_deadlock_or_gap(database_url):
    pool = await create_pool(database_url, max_size=10)
    try:
        batches = [
            [(u, "t", {}) for u in (["x", "y", "z"] if i % 2 else ["z", "y", "x"])]
            for i in range(40)
        ]
        await asyncio.wait_for(
            asyncio.gather(*[append_in_tx(pool, b) for b in batches]), timeout=60
        )
        for user in "xyz":
            rows = await events.since(pool, user, 0, 1000)
            assert [r["seq"] for r in rows] == list(range(1, 41))
    finally:
        await pool.close()


async def test_bounds_report_last_and_first_kept_seq(database_url):
    pool = await create_pool(database_url)
    try:
        assert await events.bounds(pool, "nobody") == (0, None)
        await append_in_tx(pool, [("a", "t", {})] * 3)
        assert await events.bounds(pool, "a") == (3, 1)
    finally:
        await pool.close()


async def test_prune_keeps_recent_events_and_the_newest_per_user(database_url):
    pool = await create_pool(database_url)
    try:
        await append_in_tx(pool, [("a", "t", {})] * 5)
        await append_in_tx(pool, [("b", "t", {})] * 2)
        await pool.execute("UPDATE user_events SET created_at = now() - interval '30 days'")
        await append_in_tx(pool, [("a", "t", {})])
        deleted = await events.prune(pool, days=7, keep=3)
        # a: seqs 1-5 old, 6 new; the newest 3 (4, 5, 6) stay. b: only 2 events, both stay.
        assert deleted == 3
        assert [r["seq"] for r in await events.since(pool, "a", 0, 100)] == [4, 5, 6]
        assert [r["seq"] for r in await events.since(pool, "b", 0, 100)] == [1, 2]
    finally:
        await pool.close()
