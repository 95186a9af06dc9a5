"""Presence over real sockets: ``presence`` events to partners, the debounce, hiding,
and two ``notifyhub serve`` processes on one Redis, one of them killed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import auth
from tests.live.conftest import live_hub, sse_stream, ws_connect, ws_url
from tests.live.test_cluster import Feed, feeds, greeted, no_tracebacks, two_hubs, until
from tests.servers import RedisServer

Frame = dict[str, Any]


async def befriend(http: httpx.AsyncClient, a: str, *others: str) -> None:
    """Make ``a`` a conversation partner of each of ``others``."""
    for other in others:
        r = await http.post("/api/messages/send", json={"recipient_id": other, "body": "hi"},
                            headers=auth(a))
        assert r.status_code == 201, r.text


def presence_of(feed: Feed, user: str) -> list[Frame]:
    """The ``presence`` data about ``user`` that ``feed`` received, in order."""
    return [f["data"] for f in feed.frames
            if f["type"] == "presence" and f["data"]["user_id"] == user]


async def next_presence(feed: Feed, user: str, count: int) -> Frame:
    """Wait for the ``count``-th presence event about ``user``; its data."""
    await until(lambda: len(presence_of(feed, user)) >= count)
    return presence_of(feed, user)[count - 1]


async def lookup(http: httpx.AsyncClient, viewer: str, *users: str) -> list[Frame]:
    r = await http.get("/api/presence", params={"user_ids": ",".join(users)},
                       headers=auth(viewer))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


# ---- one hub, in-process presence ---------------------------------------------------


async def test_a_partner_is_told_online_at_once_and_offline_after_the_debounce(
    settings_env: dict[str, Any],
) -> None:
    async with (
        live_hub(**settings_env, presence_debounce_seconds=0.3) as hub,
        feeds() as running,
    ):
        await befriend(hub.http, "ann", "bob")
        async with ws_connect(hub.ws_url("ann")) as ann:
            await greeted(ann)
            running.append(feed := Feed.of_ws(ann))
            async with ws_connect(hub.ws_url("bob")) as bob:
                await greeted(bob)
                online = await next_presence(feed, "bob", 1)
                assert online == {"user_id": "bob", "online": True, "last_seen": None}
                assert await lookup(hub.http, "ann", "bob") == [online]
            offline = await next_presence(feed, "bob", 2)
            assert offline["online"] is False and offline["last_seen"].endswith("Z")
            assert await lookup(hub.http, "ann", "bob") == [offline]
            await feed.quiet(ann)  # nothing more: one event each way
            assert len(presence_of(feed, "bob")) == 2


async def test_a_reload_within_the_debounce_announces_nothing_over_ws_or_sse(
    settings_env: dict[str, Any],
) -> None:
    async with (
        live_hub(**settings_env, presence_debounce_seconds=1.0) as hub,
        feeds() as running,
    ):
        await befriend(hub.http, "ann", "bob", "cid")
        async with sse_stream(hub.url, "ann") as stream:
            await greeted(stream)
            running.append(feed := Feed.of_sse(stream))
            async with ws_connect(hub.ws_url("bob")) as bob, ws_connect(hub.ws_url("cid")) as cid:
                await greeted(bob, cid)
                await next_presence(feed, "bob", 1)
                await next_presence(feed, "cid", 1)
            # Both closed; bob comes back at once (over SSE this time), cid does not.
            async with sse_stream(hub.url, "bob") as again:
                await greeted(again)
                offline = await next_presence(feed, "cid", 2)
                assert offline["online"] is False
                # bob's debounce ended before cid's: had it fired, it would have come first.
                assert presence_of(feed, "bob") == [
                    {"user_id": "bob", "online": True, "last_seen": None}
                ]
                assert (await lookup(hub.http, "ann", "bob"))[0]["online"] is True


async def test_hiding_presence_tells_partners_once_and_then_nothing(
    settings_env: dict[str, Any],
) -> None:
    async with (
        live_hub(**settings_env, presence_debounce_seconds=0.3) as hub,
        feeds() as running,
    ):
        await befriend(hub.http, "ann", "bob", "cid")
        async with ws_connect(hub.ws_url("ann")) as ann:
            await greeted(ann)
            running.append(feed := Feed.of_ws(ann))
            bob = await ws_connect(hub.ws_url("bob"))
            await greeted(bob)
            await next_presence(feed, "bob", 1)
            r = await hub.http.patch("/api/notifications/preferences",
                                     json={"hide_presence": True}, headers=auth("bob"))
            assert r.status_code == 200
            hidden = {"user_id": "bob", "online": False, "last_seen": None}
            assert await next_presence(feed, "bob", 2) == hidden
            assert await lookup(hub.http, "ann", "bob") == [hidden]
            # While hidden, bob's going and coming back says nothing (cid is the control).
            async with ws_connect(hub.ws_url("cid")) as cid:
                await greeted(cid)
                await next_presence(feed, "cid", 1)
                await bob.close()
            await next_presence(feed, "cid", 2)
            async with ws_connect(hub.ws_url("bob")) as bob_again:
                await greeted(bob_again)
                await feed.quiet(ann)
                assert len(presence_of(feed, "bob")) == 2
                r = await hub.http.patch("/api/notifications/preferences",
                                         json={"hide_presence": False}, headers=auth("bob"))
                assert r.status_code == 200
                shown = await next_presence(feed, "bob", 3)
                assert shown == {"user_id": "bob", "online": True, "last_seen": None}


# ---- two processes on one Redis -------------------------------------------------------


async def test_presence_across_instances_and_after_one_is_killed(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix,
                 presence_ttl_seconds=1.5, presence_debounce_seconds=1.0) as (a, b, http_a, _),
        feeds() as running,
    ):
        await befriend(http_a, "ann", "bob", "cid", "dan")
        async with ws_connect(ws_url(a.url, "ann")) as ann:
            await greeted(ann)
            running.append(feed := Feed.of_ws(ann))
            # bob on B is online for ann, who is on A and asks A.
            async with ws_connect(ws_url(b.url, "bob")) as bob, \
                    ws_connect(ws_url(b.url, "cid")) as cid:
                await greeted(bob, cid)
                assert (await next_presence(feed, "bob", 1))["online"] is True
                await next_presence(feed, "cid", 1)
                assert [i["online"] for i in await lookup(http_a, "ann", "bob", "cid")] == [
                    True, True
                ]
                r = await http_a.get("/api/presence", params={"user_ids": "bob,eve"},
                                     headers=auth("ann"))
                assert r.status_code == 403  # eve is no partner of ann's
            # bob reloads onto the other instance at once; cid leaves for good.
            async with ws_connect(ws_url(a.url, "bob")) as bob_again:
                await greeted(bob_again)
                cid_offline = await next_presence(feed, "cid", 2)
                assert cid_offline["online"] is False and cid_offline["last_seen"]
                assert len(presence_of(feed, "bob")) == 1
                # dan is on B when B dies: A announces him offline once his TTL ran out.
                dan = await ws_connect(ws_url(b.url, "dan"))
                await greeted(dan)
                await next_presence(feed, "dan", 1)
                await b.kill()
                dan_offline = await next_presence(feed, "dan", 2)
                assert dan_offline["online"] is False and dan_offline["last_seen"]
                assert await lookup(http_a, "ann", "dan", "bob") == [
                    dan_offline, {"user_id": "bob", "online": True, "last_seen": None}
                ]
                await feed.quiet(ann)
                assert len(presence_of(feed, "bob")) == 1 and len(presence_of(feed, "dan")) == 2
        no_tracebacks(a)


async def test_redis_down_blocks_no_connection_and_presence_answers_503_until_it_is_back(
    settings_env: dict[str, Any], own_redis: RedisServer, redis_prefix: str
) -> None:
    async with live_hub(**settings_env, redis_url=own_redis.url, redis_prefix=redis_prefix,
                        presence_ttl_seconds=1.5) as hub:
        await befriend(hub.http, "ann", "bob")
        own_redis.kill()
        async with ws_connect(hub.ws_url("bob")) as bob:
            await greeted(bob)  # connecting never waits for presence
            r = await hub.http.get("/api/presence", params={"user_ids": "bob"},
                                   headers=auth("ann"))
            assert r.status_code == 503
            assert r.json()["type"] == "urn:notifyhub:problem:unavailable"
            own_redis.start()
            # The next heartbeat (a third of the TTL) tells the store again.
            await until(lambda: _online(hub.http, "ann", "bob"))


async def _online(http: httpx.AsyncClient, viewer: str, user: str) -> bool:
    r = await http.get("/api/presence", params={"user_ids": user}, headers=auth(viewer))
    return r.status_code == 200 and r.json()["items"][0]["online"] is True
