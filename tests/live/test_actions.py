"""Action buttons live (docs/live.md ``notification.updated``; docs/ingest.md "Action
choices"): a hub served on a real port, real WebSocket and SSE clients, and the real
``{prefix}actions`` stream read with XREADGROUP as a backend would, through a Redis
restart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import SERVICE, auth
from tests.live.conftest import LiveHub, T, live_hub, recv, sse_stream, ws_connect
from tests.live.test_cluster import quiet
from tests.servers import RedisServer
from tests.waiting import eventually

BUTTONS = [{"id": "accept", "label": "Accept", "style": "primary"},
           {"id": "decline", "label": "Decline", "url": "/friends/requests"}]


async def offer(http: httpx.AsyncClient, user: str, title: str) -> dict[str, Any]:
    """A friend request with two buttons for ``user``."""
    r = await http.post("/api/notifications", headers=SERVICE, json={
        "user_id": user, "type": "friend_request", "title": title,
        "data": {"request_id": 7}, "actions": BUTTONS})
    assert r.status_code == 201, r.text
    return r.json()["items"][0]  # type: ignore[no-any-return]


async def choose(http: httpx.AsyncClient, user: str, id_: int, action: str) -> httpx.Response:
    return await http.post(f"/api/notifications/{id_}/actions/{action}", headers=auth(user))


async def test_the_owners_other_devices_get_one_notification_updated_with_the_choice(
    hub: LiveHub,
) -> None:
    async with (
        ws_connect(hub.ws_url("ann")) as phone,
        sse_stream(hub.url, "ann") as laptop,
        ws_connect(hub.ws_url("bob")) as other,
    ):
        assert (await recv(phone))["type"] == "hello"
        assert (await laptop.event())["type"] == "hello"
        assert (await recv(other))["type"] == "hello"
        item = await offer(hub.http, "ann", "Friend request from Ada")
        created = await recv(phone)
        assert created["type"] == "notification.created"
        assert (await laptop.event())["seq"] == created["seq"]

        r = await choose(hub.http, "ann", item["id"], "accept")
        assert r.status_code == 200, r.text
        for frame in (await recv(phone), await laptop.event()):
            assert frame["type"] == "notification.updated"
            assert frame["seq"] == created["seq"] + 1
            answer = r.json()
            counts = {k: answer.pop(k) for k in ("unread_count", "unseen_count")}
            assert frame["data"] == {"notification": answer, **counts}
            data = frame["data"]["notification"]
            assert data["id"] == item["id"] and data["read"] is True
            assert data["action"]["id"] == "accept" and counts["unread_count"] == 0
            assert [a["id"] for a in data["actions"]] == ["accept", "decline"]

        # The same choice again changes nothing: no second event anywhere.
        assert (await choose(hub.http, "ann", item["id"], "accept")).status_code == 200
        assert (await choose(hub.http, "ann", item["id"], "decline")).status_code == 409
        await quiet(phone)
        await quiet(other)

        # A device that was away replays the update from the log.
        async with ws_connect(hub.ws_url("ann", since=created["seq"])) as late:
            hello = await recv(late)
            assert hello["data"]["unread_count"] == 0
            replayed = await recv(late)
            assert replayed["type"] == "notification.updated"
            assert replayed["data"]["notification"]["action"]["id"] == "accept"


async def read_group(redis: aioredis.Redis, key: str, block_ms: int) -> list[dict[str, str]]:
    reply = await redis.xreadgroup("backend", "c1", {key: ">"}, count=10, block=block_ms)
    return [fields for _, entries in reply for _, fields in entries] if reply else []


async def test_every_choice_reaches_the_stream_once_across_a_redis_restart(
    settings_env: dict[str, Any], own_redis: RedisServer, redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = redis_prefix + "actions"
    caplog.set_level(logging.WARNING, logger="notifyhub")
    async with (
        live_hub(**settings_env, redis_url=own_redis.url, redis_prefix=redis_prefix) as hub,
        aioredis.Redis.from_url(own_redis.url, decode_responses=True) as backend,
    ):
        # The backend that creates friend requests reads the choices in its own group.
        await backend.xgroup_create(key, "backend", id="0", mkstream=True)
        first = await offer(hub.http, "ann", "From Ada")
        second = await offer(hub.http, "ann", "From Bo")
        assert (await choose(hub.http, "ann", first["id"], "accept")).status_code == 200
        [entry] = await read_group(backend, key, int(T * 1000))
        assert (entry["notification_id"], entry["user_id"], entry["type"],
                entry["action_id"], entry["data"]) == (
            str(first["id"]), "ann", "friend_request", "accept", '{"request_id":7}')
        await backend.aclose()

        await asyncio.to_thread(own_redis.kill)
        # Redis is down: the choice is still recorded, answered and queued.
        r = await choose(hub.http, "ann", second["id"], "decline")
        assert r.status_code == 200, r.text
        queued = await hub.svc.pool.fetch("SELECT notification_id FROM action_outbox")
        assert [row["notification_id"] for row in queued] == [second["id"]]
        # The relay tried, failed and kept it.
        await eventually(lambda: any(
            "action relay" in rec.getMessage() and "Redis unavailable" in rec.getMessage()
            for rec in caplog.records), timeout=T)
        assert await hub.svc.pool.fetchval("SELECT count(*) FROM action_outbox") == 1

        await asyncio.to_thread(own_redis.start)
        async with aioredis.Redis.from_url(own_redis.url, decode_responses=True) as again:
            got: list[dict[str, str]] = []
            async with asyncio.timeout(30):
                while not got:
                    got = await read_group(again, key, 1000)
            assert [(e["notification_id"], e["action_id"]) for e in got] == [
                (str(second["id"]), "decline")]
            assert got[0]["id"] != entry["id"]
            await eventually(lambda: _outbox_empty(hub), timeout=T)
            # Exactly once: nothing more arrives, and the stream holds the two choices.
            assert await read_group(again, key, 500) == []
            assert await again.xlen(key) == 2


async def _outbox_empty(hub: LiveHub) -> bool:
    return await hub.svc.pool.fetchval("SELECT count(*) FROM action_outbox") == 0


async def test_the_stream_is_not_needed_to_choose_without_redis(hub: LiveHub) -> None:
    # The in-process broker: the choice is recorded and shown; it waits in the outbox.
    item = await offer(hub.http, "ann", "From Cy")
    assert (await choose(hub.http, "ann", item["id"], "accept")).status_code == 200
    page = (await hub.http.get("/api/notifications", headers=auth("ann"))).json()
    assert page["items"][0]["action"]["id"] == "accept"
    assert await hub.svc.pool.fetchval("SELECT count(*) FROM action_outbox") == 1

