"""Redis stream ingest across hub processes: two instances share the work, and the
entries a dead instance held are taken over and applied exactly once.

Hubs are ``notifyhub serve`` child processes (``tests.live.test_cluster.cluster``). The
test that pauses Redis writes runs its own ``RedisServer``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from tests.live.faults import (
    add_entries,
    applied_once,
    counted,
    pending_by_consumer,
    stalled_ingest,
)
from tests.live.test_cluster import cluster, no_tracebacks, until
from tests.servers import RedisServer

#: HUB_INGEST_CLAIM_IDLE_SECONDS of hubs in tests that wait for a takeover (default 30).
SHORT_CLAIM = {"ingest_claim_idle_seconds": 1}


async def test_ingest_entries_are_applied_once_with_two_instances_consuming(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 200
    async with aioredis.Redis.from_url(redis_url) as redis:
        async with cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                           redis_prefix=redis_prefix) as (a, b):
            await add_entries(redis, redis_prefix, "u1", n)
            await applied_once(database_url, redis, redis_prefix, n)
            groups = await redis.xinfo_consumers(f"{redis_prefix}ingest", "notifyhub")
            assert len(groups) == 2  # both instances consume the one group
        no_tracebacks(a, b)


async def test_entries_held_by_a_killed_instance_are_taken_over_and_applied_once(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 100
    async with stalled_ingest(
        tmp_path, database_url, redis_url, redis_prefix, n, **SHORT_CLAIM
    ) as (a, b, redis, lock):
        await a.kill()  # its transaction rolls back; its entries stay pending in Redis
        await lock.rollback()
        await applied_once(database_url, redis, redis_prefix, n + 1)
        assert "took over" in b.log()
    no_tracebacks(b)


async def test_entries_a_killed_instance_applied_but_never_acked_are_not_applied_again(
    tmp_path: Path, database_url: str
) -> None:
    n = 20
    server = RedisServer()  # its own: writes are paused on it
    try:
        await asyncio.to_thread(server.start)
        async with stalled_ingest(
            tmp_path, database_url, server.url, "hub:", n, **SHORT_CLAIM
        ) as (a, b, redis, lock):
            held = sum((await pending_by_consumer(redis, "hub:")).values())
            # Acknowledging is a write: with writes paused, both instances commit
            # what they hold and then wait to acknowledge it.
            await redis.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            try:
                await lock.rollback()
                await until(lambda: counted(database_url, "u1", "ingest-", 1 + held))
                await a.kill()  # applied, never acknowledged
            finally:
                await redis.execute_command("CLIENT", "UNPAUSE")
            # B takes A's entries over; their idempotency keys make them no-ops.
            await applied_once(database_url, redis, "hub:", n + 1)
            assert "took over" in b.log()
        no_tracebacks(b)
    finally:
        await asyncio.to_thread(server.close)
