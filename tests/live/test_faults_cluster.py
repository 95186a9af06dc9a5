"""The delivery guarantee through Redis Cluster faults: a master killed while
notifications stream (its replica is promoted) and a slot moved under load.

The module runs its own cluster (it kills nodes and moves slots); ``cluster-node-timeout``
is 1 s, so a replica takes over within a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from pubsub.cluster import tag_for_slot
from tests.conftest import auth
from tests.live.conftest import live_hub, recv, sse_stream, ws_connect, ws_url
from tests.live.faults import creating, titles
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
from tests.live.test_faults_redis import broker_state
from tests.live.test_presence import _online, befriend
from tests.servers import RedisClusterServers


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers()
    try:
        servers.start()
        yield servers
    finally:
        servers.close()


async def subscribers(cluster: RedisClusterServers, channel: str) -> dict[int, int]:
    """Each master's port -> how many clients subscribe shard channel ``channel`` there."""
    seed = cluster.master_ports()[0]  # a live node: the URL's seed may be the one killed
    async with RedisCluster(host="127.0.0.1", port=seed) as backend:
        await backend.initialize()
        found = {}
        for port in cluster.master_ports():
            [_, count] = await backend.execute_command(
                "PUBSUB", "SHARDNUMSUB", channel, target_nodes=backend.get_node("127.0.0.1", port))
            found[port] = int(count)
        return found


async def _broker_everywhere(state: str, *clients: httpx.AsyncClient) -> bool:
    return all([await broker_state(http) == state for http in clients])


async def test_a_master_killed_mid_stream_every_client_gets_every_event_once_in_order(
    tmp_path: Path, database_url: str, redis_prefix: str, own_cluster: RedisClusterServers
) -> None:
    # The seed node the hubs were given is a master; it dies while the events of a user
    # whose channel it serves stream through it.
    victim = own_cluster.ports[0]
    assert victim in own_cluster.master_ports()
    user = "k{" + tag_for_slot(own_cluster.first_slot(victim)) + "}"
    async with (
        two_hubs(tmp_path, database_url, own_cluster.url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, user)) as on_a,
        ws_connect(ws_url(b.url, user)) as on_b,
        sse_stream(b.url, user) as sse_b,
        feeds() as running,
    ):
        await greeted(on_a, on_b, sse_b)
        running += [Feed.of_ws(on_a), Feed.of_ws(on_b), Feed.of_sse(sse_b)]
        async with creating([http_a, http_b], user) as creator:
            await creator.reach(10)
            await asyncio.to_thread(own_cluster.kill, victim)
            await creator.more(10)  # creates go on: events are durable in PostgreSQL
            # The replica is promoted; both hubs re-subscribe on it and are ready again.
            await until(lambda: victim not in own_cluster.master_ports()
                        and len(own_cluster.master_ports()) == 3, 30)
            await until(lambda: _broker_everywhere("ok", http_a, http_b), 30)
            await creator.more(10)
            created = await creator.stop()
        total = len(created)
        for feed in running:
            assert await feed.reach(total, 30) == list(range(1, total + 1))
            assert sorted(titles(feed)) == sorted(created)
        for feed, ws in zip(running, (on_a, on_b), strict=False):
            await feed.quiet(ws)
        # Both hubs hold the channel on the promoted replica, and on no other master.
        channel = f"{redis_prefix}user:{user}"
        owner = own_cluster.owner_of(key_slot(channel.encode()))
        assert owner != victim
        assert await subscribers(own_cluster, channel) == {
            port: 2 if port == owner else 0 for port in own_cluster.master_ports()}
        # A client that connects now, on the promoted master, gets the next event live.
        async with ws_connect(ws_url(a.url, user, since=total)) as late:
            assert (await recv(late))["data"]["last_seq"] == total
            await notify(http_b, user, "after")
            assert (await recv(late))["seq"] == total + 1
            await quiet(late)
    for hub in (a, b):  # each lost its link to the dead master and subscribed anew
        assert "redis cluster broker lost its link" in hub.log()
        assert "redis cluster broker re-subscribed" in hub.log()
    no_tracebacks(a, b)
    await asyncio.to_thread(own_cluster.start_node, victim)  # back, as a replica
    await asyncio.to_thread(own_cluster.wait_until_ok)


async def test_a_slot_moved_under_load_every_client_gets_every_event_once_in_order(
    tmp_path: Path, database_url: str, redis_prefix: str, own_cluster: RedisClusterServers
) -> None:
    # A user whose channel sits in the first slot of a master: the one reshard moves.
    source, target = own_cluster.master_ports()[:2]
    slot = own_cluster.first_slot(source)
    user = "m{" + tag_for_slot(slot) + "}"
    assert key_slot(f"{redis_prefix}user:{user}".encode()) == slot
    async with (
        two_hubs(tmp_path, database_url, own_cluster.url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, user)) as on_a,
        sse_stream(b.url, user) as sse_b,
        feeds() as running,
    ):
        await greeted(on_a, sse_b)
        running += [Feed.of_ws(on_a), Feed.of_sse(sse_b)]
        async with creating([http_a, http_b], user) as creator:
            await creator.reach(10)
            await asyncio.to_thread(own_cluster.reshard, source, target)
            assert own_cluster.owner_of(slot) == target
            await creator.more(20)
            created = await creator.stop()
        total = len(created)
        for feed in running:
            assert await feed.reach(total, 30) == list(range(1, total + 1))
            assert sorted(titles(feed)) == sorted(created)
        await running[0].quiet(on_a)
        # Both hubs hold the channel on its new owner now, and on no other master.
        assert await subscribers(own_cluster, f"{redis_prefix}user:{user}") == {
            port: 2 if port == target else 0 for port in own_cluster.master_ports()}
    for hub in (a, b):  # each was told by the source that the channel moved away
        assert f"dropped b'{redis_prefix}user:{user}' (its slot moved)" in hub.log()
    no_tracebacks(a, b)


async def test_a_cluster_with_no_node_answering_gets_presence_503_and_no_traceback(
    settings_env: dict[str, Any], redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Its own cluster: every node is killed. redis-py then raises RedisClusterException,
    # which is no RedisError; presence must still answer 503, never 500.
    servers = RedisClusterServers()
    try:
        servers.start()
        async with live_hub(**settings_env, redis_url=servers.url, redis_prefix=redis_prefix,
                            presence_ttl_seconds=1.5) as hub:
            await befriend(hub.http, "ann", "bob")
            async with ws_connect(hub.ws_url("bob")) as bob:
                await greeted(bob)
                await until(lambda: _online(hub.http, "ann", "bob"))
                for port in list(servers.procs):
                    servers.kill(port)
                r = await hub.http.get("/api/presence", params={"user_ids": "bob"},
                                       headers=auth("ann"))
                assert r.status_code == 503, r.text
                assert r.json()["type"] == "urn:notifyhub:problem:unavailable"
                await asyncio.sleep(1.0)  # a heartbeat (a third of the TTL) meets it too
    finally:
        servers.close()
    assert "Traceback" not in caplog.text
