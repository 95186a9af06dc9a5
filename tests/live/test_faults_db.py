"""A database that accepts connections but never answers (a hung server, a black-holed
network): the hub answers within its timeouts rather than hanging, and recovers without
a restart once the database answers again.

The hub reaches its real PostgreSQL through ``tests.proxy.StallableProxy``; ``stall()``
keeps every connection open and moves no bytes. The hubs run with the default timeouts
(``HUB_DB_*_TIMEOUT_SECONDS``): the bounds below are the documented ones plus a margin
for a loaded machine, and the faults lasted 30 s or more before they existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from db.errors import DatabaseUnavailable
from db.pool import create_pool
from hub import announcements, cleanup
from tests.conftest import SERVICE, auth
from tests.live.conftest import (
    LiveHub,
    closed_code,
    counted,
    live_hub,
    recv,
    sse_stream,
    ws_connect,
)
from tests.live.faults import add_entries, applied_once
from tests.proxy import StallableProxy, proxied
from tests.waiting import eventually

#: ``/ready`` must answer within 2 s; requests and handshakes within 5 s (docs/api.md).
READY_BOUND, REQUEST_BOUND = 2.0, 5.0
#: What a loaded 2-core machine may add to those bounds.
MARGIN = 1.5


@contextlib.asynccontextmanager
async def hub_behind_proxy(
    settings_env: dict[str, Any], **settings: Any
) -> AsyncIterator[tuple[LiveHub, StallableProxy]]:
    with proxied(settings_env["database_url"]) as (proxy, url):
        async with live_hub(**{**settings_env, "database_url": url, **settings}) as hub:
            yield hub, proxy


async def timed(awaitable: Any) -> tuple[Any, float]:
    """What ``awaitable`` gave and how many seconds it took (a hang fails after 60 s)."""
    start = time.monotonic()
    result = await asyncio.wait_for(awaitable, 60)
    return result, time.monotonic() - start


async def ready_status(hub: LiveHub) -> int:
    return (await hub.http.get("/ready", timeout=60)).status_code


async def test_ready_answers_503_within_2_s_while_the_database_stalls_then_200_again(
    settings_env: dict[str, Any],
) -> None:
    async with hub_behind_proxy(settings_env) as (hub, proxy):
        assert await ready_status(hub) == 200
        proxy.stall()
        for _ in range(2):  # the second check finds a pool whose connection timed out
            response, took = await timed(hub.http.get("/ready", timeout=60))
            assert response.status_code == 503
            assert response.json() == {"database": "down", "broker": "ok"}
            assert took < READY_BOUND + MARGIN
        proxy.resume()
        await eventually(lambda: _is(200, ready_status(hub)), 15)


async def _is(status: int, check: Any) -> bool:
    return await check == status


async def test_rest_requests_answer_503_within_5_s_while_the_database_stalls_then_succeed(
    settings_env: dict[str, Any],
) -> None:
    async with hub_behind_proxy(settings_env) as (hub, proxy):
        create = {"user_id": "u1", "type": "t", "title": "before"}
        assert (await hub.http.post("/api/notifications", headers=SERVICE, json=create)
                ).status_code == 201
        proxy.stall()
        requests = [
            hub.http.get("/api/notifications", headers=auth("u1"), timeout=60),
            hub.http.post("/api/notifications", headers=SERVICE, timeout=60,
                          json={**create, "title": "during"}),
            hub.http.get("/api/notifications/unread-count", headers=auth("u2"), timeout=60),
        ]
        responses, took = await timed(asyncio.gather(*requests))
        for response in responses:
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"] == "the database is unavailable"
        assert took < REQUEST_BOUND + MARGIN
        proxy.resume()
        # More requests at once than the pool has connections: every connection is used,
        # and none that timed out is reused mid-protocol.
        async def listed() -> bool:
            answers = await asyncio.gather(*[
                hub.http.get("/api/notifications", headers=auth("u1")) for _ in range(25)
            ])
            return all(a.status_code == 200 for a in answers)

        await eventually(listed, 15)
        response = await hub.http.post("/api/notifications", headers=SERVICE,
                                       json={**create, "title": "after"})
        assert response.status_code == 201, response.text


async def test_websocket_handshake_closes_1013_while_the_database_stalls_then_says_hello(
    settings_env: dict[str, Any],
) -> None:
    async with hub_behind_proxy(settings_env) as (hub, proxy):
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert (await recv(ws))["type"] == "hello"
        proxy.stall()
        async with ws_connect(hub.ws_url("u1")) as ws:
            code, took = await timed(closed_code(ws, timeout=60))
        assert code == 1013
        assert took < REQUEST_BOUND + MARGIN
        proxy.resume()

        async def greeted() -> bool:
            async with ws_connect(hub.ws_url("u1")) as ws:
                frame = await recv(ws)
            return frame["type"] == "hello"

        await eventually(greeted, 15)


async def test_sse_connect_answers_503_within_5_s_while_the_database_stalls_then_streams(
    settings_env: dict[str, Any],
) -> None:
    async with hub_behind_proxy(settings_env) as (hub, proxy):
        proxy.stall()
        (status, kind), took = await timed(_sse_answer(hub.url))
        assert (status, kind) == (503, "application/problem+json")
        assert took < REQUEST_BOUND + MARGIN
        proxy.resume()

        async def streaming() -> bool:
            async with sse_stream(hub.url, "u1") as sse:
                return sse.response.status_code == 200 and (await sse.event())["type"] == "hello"

        await eventually(streaming, 15)


async def _sse_answer(url: str) -> tuple[int, str]:
    async with sse_stream(url, "u1") as sse:
        return sse.response.status_code, sse.response.headers["content-type"]


async def test_a_pool_connection_whose_statement_timed_out_is_closed_not_reused(
    database_url: str,
) -> None:
    with proxied(database_url) as (proxy, url):
        pool = await create_pool(url, 1, 1, connect_timeout=1, acquire_timeout=1,
                                 statement_timeout=1)
        try:
            async with pool.acquire() as conn:
                before = await conn.fetchval("SELECT pg_backend_pid()")
            proxy.stall()
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(pool.fetchval("SELECT 1"), 30)
            proxy.resume()
            async with asyncio.timeout(10):
                async with pool.acquire() as conn:
                    after = await conn.fetchval("SELECT pg_backend_pid()")
                    assert await conn.fetchval("SELECT 41 + 1") == 42
            assert after != before  # a fresh connection: the stalled one was closed
        finally:
            await asyncio.wait_for(pool.close(), 10)


async def test_a_statement_on_a_stalled_pool_fails_within_its_timeouts(
    database_url: str,
) -> None:
    with proxied(database_url) as (proxy, url):
        pool = await create_pool(url, 1, 2, connect_timeout=1, acquire_timeout=1,
                                 statement_timeout=1)
        try:
            proxy.stall()
            for _ in range(3):  # a stalled connection, then new ones that cannot start
                start = time.monotonic()
                with pytest.raises(DatabaseUnavailable):  # never the driver's exceptions
                    await asyncio.wait_for(pool.fetchval("SELECT 1"), 30)
                assert time.monotonic() - start < 2 + 1 + MARGIN
            proxy.resume()
            assert await asyncio.wait_for(pool.fetchval("SELECT 1"), 10) == 1
        finally:
            await asyncio.wait_for(pool.close(), 10)


async def test_ingest_entries_added_during_a_stall_are_applied_exactly_once_after_it(
    settings_env: dict[str, Any], database_url: str, redis_url: str, redis_prefix: str,
) -> None:
    n = 50
    async with (
        aioredis.Redis.from_url(redis_url) as redis,
        hub_behind_proxy(settings_env, redis_url=redis_url, redis_prefix=redis_prefix)
        as (hub, proxy),
    ):
        await add_entries(redis, redis_prefix, "u1", 1)
        await applied_once(database_url, redis, redis_prefix, 1)
        proxy.stall()
        await add_entries(redis, redis_prefix, "u1", n, first=1, pause=0.02)
        # The stalled commit times out and counts as a transient failure: the batch
        # is held (nothing acknowledged) and retried, not lost and not hung.
        await eventually(lambda: counted(hub.svc, "ingest_retried") > 0, REQUEST_BOUND * 3)
        # A REST create during the stall gets 503, not a hang, beside the held batch.
        response, took = await timed(hub.http.post(
            "/api/notifications", headers=SERVICE, timeout=60,
            json={"user_id": "u2", "type": "t", "title": "rest-during"},
        ))
        assert response.status_code == 503 and took < REQUEST_BOUND + MARGIN
        await asyncio.sleep(1)
        proxy.resume()
        await applied_once(database_url, redis, redis_prefix, 1 + n)
        assert not await _dead_letters(redis, redis_prefix)


async def _dead_letters(redis: aioredis.Redis, prefix: str) -> int:
    return int(await redis.xlen(f"{prefix}ingest:dead"))


async def test_background_tasks_log_a_database_stall_in_one_line_without_a_traceback(
    settings_env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with hub_behind_proxy(settings_env, cleanup_interval_seconds=1) as (hub, proxy):
        svc = hub.app.state.services
        proxy.stall()
        with caplog.at_level(logging.WARNING, logger="notifyhub"):
            for task in (announcements.run_scheduler(svc, recheck_seconds=0.1),
                         cleanup.run_forever(svc)):
                runner = asyncio.ensure_future(task)
                await eventually(lambda: _warned(caplog), 20)
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                caplog.clear()
        proxy.resume()


async def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    records = [r for r in caplog.records if "will retry" in r.getMessage()]
    assert all(r.exc_info is None and "unavailable" in r.getMessage() for r in records), [
        (r.getMessage(), r.exc_info) for r in records]
    return bool(records)
