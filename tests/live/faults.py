"""Helpers of the fault tests (``test_faults_*.py``): background creators, Redis ingest
entries and what is pending of them, and two hubs whose ingest is stalled mid-batch.

Hubs are ``notifyhub serve`` child processes (``tests.live.test_cluster.cluster``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from tests.live.conftest import SSE, HubProcess
from tests.live.test_cluster import Feed, cluster, greeted, notify, until


class Creator:
    """Creates notifications for ``user`` in the background, one at a time per client.

    ``created`` are the titles that got a 201. A client in ``fragile`` may fail once its
    instance goes away (it then stops); any failure of another client fails the test.
    """

    def __init__(
        self, clients: list[httpx.AsyncClient], user: str,
        fragile: httpx.AsyncClient | None = None,
    ) -> None:
        self.user, self.created, self._stop = user, [], asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._run(http, f"w{n}-", http is fragile))
            for n, http in enumerate(clients)
        ]

    async def _run(self, http: httpx.AsyncClient, name: str, fragile: bool) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                await notify(http, self.user, f"{name}{i}")
            except (httpx.HTTPError, AssertionError):
                if fragile:
                    return
                raise
            self.created.append(f"{name}{i}")
            i += 1
            await asyncio.sleep(0.01)

    async def reach(self, count: int, timeout: float = 20) -> None:
        """Wait until ``count`` creates succeeded; raises what a creator failed with."""
        def check() -> bool:
            for task in self.tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            return len(self.created) >= count

        await until(check, timeout)

    async def more(self, n: int, timeout: float = 20) -> None:
        await self.reach(len(self.created) + n, timeout)

    async def stop(self) -> list[str]:
        """Stop creating; the titles created."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 20)
        return self.created


@contextlib.asynccontextmanager
async def creating(*args: Any, **kwargs: Any) -> AsyncIterator[Creator]:
    creator = Creator(*args, **kwargs)
    try:
        yield creator
    finally:
        for task in creator.tasks:
            task.cancel()
        await asyncio.wait(creator.tasks)


async def last_seq(database_url: str, user: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval("SELECT last_seq FROM user_counters WHERE user_id = $1", user)
    finally:
        await conn.close()
    return int(value or 0)


def titles(feed: Feed) -> list[str]:
    return [f["data"]["title"] for f in feed.frames if f["type"] == "notification.created"]


async def follow(running: list[Feed], ws: ClientConnection, sse: SSE) -> list[Feed]:
    """Feeds of a WebSocket and an SSE stream after their hello, added to ``running``."""
    await greeted(ws, sse)
    both = [Feed.of_ws(ws), Feed.of_sse(sse)]
    running += both
    return both


async def add_entries(
    redis: aioredis.Redis, prefix: str, user: str, n: int, pause: float = 0.0, first: int = 0
) -> None:
    """XADD ``n`` entries for ``user`` titled ``ingest-<i>`` (no idempotency key)."""
    for i in range(first, first + n):
        payload = orjson.dumps({"user_id": user, "type": "t", "title": f"ingest-{i}"})
        await redis.xadd(f"{prefix}ingest", {"payload": payload})
        if pause:
            await asyncio.sleep(pause)


async def count_titled(database_url: str, user: str, prefix: str) -> int:
    """Notifications of ``user`` with a title starting with ``prefix``; duplicates fail."""
    conn = await asyncpg.connect(database_url)
    try:
        count, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT title) FROM notifications"
            " WHERE user_id = $1 AND starts_with(title, $2)", user, prefix,
        )
    finally:
        await conn.close()
    assert count == distinct, f"{count - distinct} entries were applied twice"
    return int(count)


async def counted(database_url: str, user: str, prefix: str, n: int) -> bool:
    return await count_titled(database_url, user, prefix) == n


async def pending_by_consumer(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Entries delivered but not acknowledged, by consumer name."""
    summary = await redis.xpending(f"{prefix}ingest", "notifyhub")
    return {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
        for c in summary["consumers"]
    }


def consumer_of(hub: HubProcess, pending: dict[str, int]) -> int:
    assert hub.proc is not None
    return sum(n for name, n in pending.items() if f"-{hub.proc.pid}-" in name)


async def applied_once(database_url: str, redis: aioredis.Redis, prefix: str, n: int) -> None:
    """Wait until ``n`` entries for u1 are applied and none is pending: each applied once."""
    await until(lambda: counted(database_url, "u1", "ingest-", n))
    await until(lambda: no_pending(redis, prefix))
    assert await count_titled(database_url, "u1", "ingest-") == n


async def no_pending(redis: aioredis.Redis, prefix: str) -> bool:
    return sum((await pending_by_consumer(redis, prefix)).values()) == 0


@contextlib.asynccontextmanager
async def stalled_ingest(
    tmp_path: Path, database_url: str, redis_url: str, prefix: str, n: int, **settings: Any
) -> AsyncIterator[tuple[HubProcess, HubProcess, aioredis.Redis, Any]]:
    """Two hubs on ``settings`` that both hold delivered, unacknowledged entries of ``n``
    just added for u1.

    Holding u1's counter row lock stalls every apply mid-transaction (after one entry
    created the row). Yields the hubs, a Redis client and the lock's transaction;
    rolling it back lets them go on.
    """
    async with (
        aioredis.Redis.from_url(redis_url) as redis,
        cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                redis_prefix=prefix, **settings) as (a, b),
    ):
        await add_entries(redis, prefix, "u1", 1)
        await until(lambda: counted(database_url, "u1", "ingest-", 1))
        blocker = await asyncpg.connect(database_url)
        try:
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("SELECT 1 FROM user_counters WHERE user_id = 'u1' FOR UPDATE")
            await add_entries(redis, prefix, "u1", n, first=1)
            await until(lambda: _both_hold(redis, prefix, a, b))
            yield a, b, redis, lock
        finally:
            await blocker.close()


async def _both_hold(redis: aioredis.Redis, prefix: str, a: HubProcess, b: HubProcess) -> bool:
    pending = await pending_by_consumer(redis, prefix)
    return consumer_of(a, pending) > 0 and consumer_of(b, pending) > 0
