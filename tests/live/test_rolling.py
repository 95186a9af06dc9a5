"""Two versions side by side during a rolling upgrade (docs/configuration.md, "Rolling
upgrades"): what an instance does with Redis messages of a newer version."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from db import events as event_log
from hub.events import encode, user_channel
from tests.live.conftest import LiveHub, live_hub, notify, recv, sse_stream, ws_connect


async def log_unpublished(hub: LiveHub, user: str, type_: str) -> int:
    """The seq of an event committed to ``user``'s log but not published."""
    async with hub.svc.pool.acquire() as conn, conn.transaction():
        [(_, seq, _, _)] = await event_log.append(conn, [(user, type_, {"v": 2})])
    return seq


@pytest.fixture
async def on_redis(
    settings_env: dict[str, Any], redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[LiveHub, aioredis.Redis, str]]:
    """A hub on the test's Redis, a client of that Redis, and u1's channel there."""
    async with (
        live_hub(**settings_env, redis_url=redis_url, redis_prefix=redis_prefix) as hub,
        aioredis.Redis.from_url(redis_url) as redis,
    ):
        yield hub, redis, redis_prefix + user_channel("u1")


async def test_redis_messages_in_a_format_this_version_does_not_know_are_dropped_and_their_events_filled_from_the_log(  # noqa: E501
    on_redis: tuple[LiveHub, aioredis.Redis, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, redis, channel = on_redis
    async with (
        ws_connect(hub.ws_url("u1")) as ws,
    ):
        assert (await recv(ws))["data"]["last_seq"] == 0
        # A newer instance's event: in the log, published in layouts this one cannot
        # read (another header, no header, not even text).
        seq = await log_unpublished(hub, "u1", "future.kind")
        # Marked, so that a client would tell one forwarded from the one in the log.
        frame = encode("future.kind", seq, {"v": 2, "forwarded": True})
        with caplog.at_level(logging.WARNING, logger="pubsub.redis"):
            for message in (b"v2 %d\n" % seq + frame, frame, b"\xff\x00" + frame):
                assert await redis.publish(channel, message) == 1
            created = await notify(hub, "u1", "from this version")
            # The connection stayed open; the next event showed the gap, and the event
            # came from the log, once, in order, before it.
            assert await recv(ws) == {"type": "future.kind", "seq": 1, "data": {"v": 2}}
            assert await recv(ws) == {"type": "notification.created", "seq": 2, "data": created}
            await ws.send('{"type":"ping"}')
            assert (await recv(ws))["type"] == "pong"
        dropped = [r for r in caplog.records if "dropped a malformed message" in r.message]
        assert len(dropped) == 3


async def test_an_event_type_this_version_does_not_know_is_forwarded_unchanged(
    on_redis: tuple[LiveHub, aioredis.Redis, str],
) -> None:
    hub, redis, channel = on_redis
    async with (
        ws_connect(hub.ws_url("u1")) as ws,
        sse_stream(hub.url, "u1") as sse,
    ):
        await recv(ws)
        await sse.event()
        frame = encode("future.ephemeral", None, {"shape": "new", "n": 1})
        await redis.publish(channel, b"\n" + frame)
        expected = {"type": "future.ephemeral", "seq": None, "data": {"shape": "new", "n": 1}}
        assert await recv(ws) == expected
        assert await sse.event() == expected
        created = await notify(hub, "u1")
        assert await recv(ws) == {"type": "notification.created", "seq": 1, "data": created}
        assert (await sse.event())["data"] == created


async def test_header_fields_of_a_later_wire_version_are_ignored_and_the_event_delivered(
    on_redis: tuple[LiveHub, aioredis.Redis, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, redis, channel = on_redis
    async with (
        ws_connect(hub.ws_url("u1")) as ws,
    ):
        await recv(ws)
        seq = await log_unpublished(hub, "u1", "future.kind")
        # Marked, so the forwarded frame is told from the one in the log.
        frame = encode("future.kind", seq, {"v": 2, "forwarded": True})
        ephemeral = encode("future.ephemeral", None, {"n": 1})
        with caplog.at_level(logging.WARNING, logger="pubsub.redis"):
            await redis.publish(channel, b"%d v=2 origin=b\n" % seq + frame)
            await redis.publish(channel, b" v=2\n" + ephemeral)
            assert await recv(ws) == {"type": "future.kind", "seq": seq,
                                      "data": {"v": 2, "forwarded": True}}
            assert await recv(ws) == {"type": "future.ephemeral", "seq": None, "data": {"n": 1}}
            created = await notify(hub, "u1")
            assert await recv(ws) == {"type": "notification.created", "seq": seq + 1,
                                      "data": created}
        assert "dropped a malformed message" not in caplog.text
