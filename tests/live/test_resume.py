"""The delivery guarantee over real sockets: resume, resync, ordering, gap fill, drain,
and fan-out between two instances through Redis."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from db import events as event_log
from tests.conftest import SECRET, SERVICE
from tests.live.conftest import (
    HubProcess,
    LiveHub,
    closed_code,
    counted,
    hub_env,
    live_hub,
    notify,
    recv,
    sse_stream,
    ws_connect,
    ws_url,
)


async def log_unpublished(hub: LiveHub, user: str, n: int) -> None:
    """Events that are committed but whose publish was lost."""
    async with hub.svc.pool.acquire() as conn, conn.transaction():
        await event_log.append(conn, [(user, "test.event", {"i": i}) for i in range(n)])


async def test_resuming_after_30_missed_events_gets_exactly_those_in_order_then_live(
    hub: LiveHub,
) -> None:
    await notify(hub, "u1", "seen")
    async with ws_connect(hub.ws_url("u1")) as ws:
        assert (await recv(ws))["data"]["last_seq"] == 1
    for i in range(30):
        await notify(hub, "u1", f"missed {i}")
    async with ws_connect(hub.ws_url("u1", since=1)) as ws:
        hello = await recv(ws)
        assert hello["data"]["last_seq"] == 31
        missed = [await recv(ws) for _ in range(30)]
        assert [f["seq"] for f in missed] == list(range(2, 32))
        assert [f["data"]["title"] for f in missed] == [f"missed {i}" for i in range(30)]
        await notify(hub, "u1", "live")
        live = await recv(ws)
        assert (live["seq"], live["data"]["title"]) == (32, "live")
        await ws.send('{"type":"ping"}')
        assert (await recv(ws))["type"] == "pong"  # nothing else was in between


async def test_a_replay_of_1000_events_fits_with_default_limits(hub: LiveHub) -> None:
    await log_unpublished(hub, "u1", 1000)
    async with ws_connect(hub.ws_url("u1", since=0)) as ws:
        await recv(ws)
        got = [(await recv(ws))["seq"] for _ in range(1000)]
    assert got == list(range(1, 1001))


async def test_since_older_than_the_kept_history_gets_resync(hub: LiveHub) -> None:
    for _ in range(5):
        await notify(hub, "u1")
    await hub.svc.pool.execute("DELETE FROM user_events WHERE user_id = 'u1' AND seq <= 3")
    async with ws_connect(hub.ws_url("u1", since=1)) as ws:
        assert (await recv(ws))["type"] == "hello"
        assert await recv(ws) == {"type": "resync", "seq": None,
                                  "data": {"reason": "history_pruned"}}
        await notify(hub, "u1")
        assert (await recv(ws))["seq"] == 6
    async with ws_connect(hub.ws_url("u1", since=2)) as ws:  # 3 is gone
        assert (await recv(ws))["type"] == "hello"
        assert (await recv(ws))["type"] == "resync"
    async with ws_connect(hub.ws_url("u1", since=3)) as ws:  # everything after 3 is kept
        assert (await recv(ws))["type"] == "hello"
        assert [(await recv(ws))["seq"] for _ in range(3)] == [4, 5, 6]


async def test_concurrent_creates_arrive_strictly_consecutive(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        await recv(ws)
        await asyncio.wait_for(
            asyncio.gather(*(notify(hub, "u1", f"c{i}") for i in range(50))), 60
        )
        got = [await recv(ws) for _ in range(50)]
        assert [f["seq"] for f in got] == list(range(1, 51))
        assert sorted(f["data"]["title"] for f in got) == sorted(f"c{i}" for i in range(50))


async def test_a_lost_publish_is_filled_from_the_event_log(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws, sse_stream(hub.url, "u1") as sse:
        await recv(ws)
        await sse.event()
        await log_unpublished(hub, "u1", 2)
        await notify(hub, "u1", "third")  # seq 3 is published; 1 and 2 never were
        assert [(await recv(ws))["seq"] for _ in range(3)] == [1, 2, 3]
        assert [(await sse.event())["seq"] for _ in range(3)] == [1, 2, 3]
    assert counted(hub.svc, "gap_fills") == 2  # one per connection


async def test_draining_closes_websockets_with_1001_and_ends_sse_streams(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws, sse_stream(hub.url, "u2") as sse:
            await recv(ws)
            await sse.event()
            stopping = asyncio.create_task(hub.stop())
            assert await closed_code(ws) == 1001
            while await sse.block() is not None:
                pass
            await asyncio.wait_for(stopping, 30)
        assert len(hub.node.registry) == 0


# ---- two instances through Redis -----------------------------------------------------


async def test_a_client_gets_events_created_on_another_instance(
    settings_env: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    shared = {**settings_env, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with live_hub(**shared) as a, live_hub(**shared) as b:
        async with ws_connect(a.ws_url("u1")) as ws, sse_stream(a.url, "u1") as sse:
            await recv(ws)
            await sse.event()
            created = await notify(b, "u1", "from b")
            assert await recv(ws) == {"type": "notification.created", "seq": 1, "data": created}
            assert (await sse.event())["data"] == created
            r = await b.http.post("/api/announcements", headers=SERVICE, json={"title": "All"})
            assert r.status_code == 201
            frame = await recv(ws)
            assert (frame["type"], frame["data"]["title"]) == ("announcement.created", "All")


async def test_resume_on_another_instance_delivers_every_event_once(
    settings_env: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    shared = {**settings_env, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with live_hub(**shared) as a, live_hub(**shared) as b:
        async with ws_connect(a.ws_url("u1")) as ws:
            await recv(ws)
            await notify(b, "u1")
            assert (await recv(ws))["seq"] == 1
        for _ in range(3):
            await notify(a, "u1")
        async with ws_connect(b.ws_url("u1", since=1)) as ws:
            await recv(ws)
            assert [(await recv(ws))["seq"] for _ in range(3)] == [2, 3, 4]
            await notify(a, "u1")
            assert (await recv(ws))["seq"] == 5
            await ws.send('{"type":"ping"}')
            assert (await recv(ws))["type"] == "pong"


async def test_after_the_subscriber_connection_drops_missed_events_are_delivered(
    settings_env: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    shared = {**settings_env, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with live_hub(**shared) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            await recv(ws)
            await log_unpublished(hub, "u1", 2)  # published while the subscriber was gone
            client = aioredis.Redis.from_url(redis_url)
            try:
                await client.client_kill_filter(_type="pubsub")
            finally:
                await client.aclose()
            assert [(await recv(ws, 20))["seq"] for _ in range(2)] == [1, 2]
            await notify(hub, "u1")
            assert (await recv(ws, 20))["seq"] == 3


# ---- a hub process -------------------------------------------------------------------


async def test_sigterm_drains_live_connections_and_the_process_exits_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    env = hub_env(database_url=database_url, jwt_secret=SECRET, data_dir=tmp_path / "data")
    hub = await HubProcess(env, tmp_path / "hub.log").start()
    try:
        async with ws_connect(ws_url(hub.url, "u1")) as ws, sse_stream(hub.url, "u1") as sse:
            assert (await recv(ws))["type"] == "hello"
            assert (await sse.event())["type"] == "hello"
            hub.signal(signal.SIGTERM)
            assert await closed_code(ws, 20) == 1001
            while await sse.block(20) is not None:
                pass
        assert await hub.wait(30) == 0, hub.log()
    finally:
        await hub.kill()
    assert "Traceback" not in hub.log()
