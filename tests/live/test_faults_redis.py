"""The delivery guarantee through a Redis restart: events created while Redis is down
reach every client once, and ingest resumes.

The test runs its own ``RedisServer`` (AOF on), which it kills; the session's is never
touched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from tests.live.conftest import recv, sse_stream, ws_connect, ws_url
from tests.live.faults import add_entries, creating, titles
from tests.live.test_cluster import (
    Feed,
    feeds,
    greeted,
    no_tracebacks,
    notify,
    quiet,
    two_hubs,
    until,
)
from tests.servers import RedisServer


async def broker_state(http: httpx.AsyncClient) -> str:
    """What ``/ready`` says about the broker: ``ok`` or ``down``."""
    response = await http.get("/ready")
    state: str = response.json()["broker"]
    assert response.status_code == (200 if state == "ok" else 503), response.text
    return state


async def test_events_created_while_redis_is_down_reach_every_client_once_after_restart(
    tmp_path: Path, database_url: str
) -> None:
    server = RedisServer()
    try:
        await asyncio.to_thread(server.start)
        async with (
            two_hubs(tmp_path, database_url, server.url, "hub:") as (a, b, http_a, http_b),
            ws_connect(ws_url(b.url, "u1")) as ws,
            sse_stream(a.url, "u1") as sse,
            ws_connect(ws_url(b.url, "u2")) as ws_u2,
            feeds() as running,
        ):
            await greeted(ws, ws_u2, sse)
            running += [Feed.of_ws(ws), Feed.of_sse(sse), Feed.of_ws(ws_u2)]
            u1_feeds, u2 = running[:2], running[2]
            async with creating([http_a, http_b], "u1") as creator:
                await creator.reach(5)
                await asyncio.to_thread(server.kill)
                await until(lambda: _broker_everywhere("down", http_a, http_b))
                await creator.more(10)  # creates go on: events are durable in PostgreSQL
                # u2 (connected before) and u3 (connecting now) get events only while
                # Redis is down: nothing but the catch-up after the broker reconnects
                # (Node.on_reconnect) can deliver them.
                async with ws_connect(ws_url(a.url, "u3")) as ws_u3:
                    assert (await recv(ws_u3))["type"] == "hello"
                    u3 = Feed.of_ws(ws_u3)
                    running.append(u3)
                    for i in range(3):
                        await notify(http_a, ["u2", "u3"], f"down {i}")
                    await asyncio.to_thread(server.start)
                    await until(lambda: _broker_everywhere("ok", http_a, http_b))
                    assert await u3.reach(3) == [1, 2, 3]
                    await u3.quiet(ws_u3)
                assert await u2.reach(3) == [1, 2, 3]
                await u2.quiet(ws_u2)
                await creator.more(5)
                created = await creator.stop()
            total = len(created)
            for feed in u1_feeds:  # connected throughout: every event once, in order
                assert await feed.reach(total) == list(range(1, total + 1))
                assert sorted(titles(feed)) == sorted(created)
            # Stream ingest is back too: an entry added now reaches the clients.
            async with aioredis.Redis.from_url(server.url) as redis:
                await add_entries(redis, "hub:", "u1", 1)
            for feed in u1_feeds:
                assert await feed.reach(total + 1) == list(range(1, total + 2))
            await u1_feeds[0].quiet(ws)

            # A client that was away across the restart resumes with everything once.
            async with ws_connect(ws_url(a.url, "u1", since=2)) as late:
                assert (await recv(late))["data"]["last_seq"] == total + 1
                assert [(await recv(late))["seq"] for _ in range(total - 1)] == list(
                    range(3, total + 2)
                )
                await notify(http_b, "u1", "after")
                assert (await recv(late))["seq"] == total + 2
                await quiet(late)
        no_tracebacks(a, b)
    finally:
        await asyncio.to_thread(server.close)


async def _broker_everywhere(state: str, *clients: httpx.AsyncClient) -> bool:
    return all([await broker_state(http) == state for http in clients])
