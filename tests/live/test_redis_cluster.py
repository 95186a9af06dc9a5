"""The live contract on a Redis Cluster (3 masters, 3 replicas): ``notifyhub serve``
processes with ``HUB_REDIS_URL=redis+cluster://`` and real clients.

The cross-instance, resume and presence tests of ``test_cluster.py`` and
``test_presence.py`` run here again, unchanged, on the session's cluster (this module's
``redis_url`` names it); ingest, dead letters, the publish channel and the action stream
are checked with the hash-tagged key names a backend uses on a cluster
(docs/redis-cluster.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from pubsub.cluster import node_url
from tests.conftest import SERVICE, auth
from tests.live import test_cluster, test_presence
from tests.live.conftest import recv, ws_connect, ws_url
from tests.live.test_actions import BUTTONS
from tests.live.test_cluster import cluster, no_tracebacks, notify, quiet, two_hubs, until
from tests.servers import RedisClusterServers

test_events_from_either_instance_reach_clients_on_both_exactly_once = (
    test_cluster.test_events_from_either_instance_reach_clients_on_both_exactly_once
)
test_a_client_that_missed_30_events_on_one_instance_resumes_on_the_other = (
    test_cluster.test_a_client_that_missed_30_events_on_one_instance_resumes_on_the_other
)
test_presence_across_instances_and_after_one_is_killed = (
    test_presence.test_presence_across_instances_and_after_one_is_killed
)


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """The hubs of this module run on the cluster."""
    return redis_cluster_url


@pytest.fixture
async def backend(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A cluster client, as a backend service holds one."""
    client = RedisCluster.from_url(node_url(redis_cluster_url))
    try:
        await client.initialize()
        yield client
    finally:
        await client.aclose()


async def test_subscriptions_sit_on_the_owning_master_only(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str,
    redis_cluster: RedisClusterServers, backend: RedisCluster,
) -> None:
    users = [f"s{i}" for i in range(12)]  # spread over the three masters
    async with two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, _):
        async with ws_connect(ws_url(a.url, users[0])) as first:
            assert (await recv(first))["type"] == "hello"
            sockets = [await ws_connect(ws_url(b.url, user)).__aenter__() for user in users]
            try:
                for ws in sockets:
                    assert (await recv(ws))["type"] == "hello"
                channels = {user: f"{redis_prefix}user:{user}" for user in users}
                owners = {user: backend.get_node_from_key(ch) for user, ch in channels.items()}
                assert len({node.name for node in owners.values()}) == 3
                for user, channel in channels.items():
                    for port in redis_cluster.master_ports():
                        [_, count] = await backend.execute_command(
                            "PUBSUB", "SHARDNUMSUB", channel,
                            target_nodes=backend.get_node("127.0.0.1", port))
                        # B holds every user; A only users[0]; no other master hears of it.
                        expected = 1 + (user == users[0]) if port == owners[user].port else 0
                        assert (port, count) == (port, expected)
                created = await notify(http_a, users, "to all twelve")
                for ws in sockets:
                    frame = await recv(ws)
                    assert (frame["type"], frame["data"]["title"]) == (
                        "notification.created", created["title"])
                    await quiet(ws)
            finally:
                for ws in sockets:
                    await ws.close()
    no_tracebacks(a, b)


async def test_ingest_dead_letters_the_publish_channel_and_actions_use_the_hash_tagged_keys(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str,
    backend: RedisCluster,
) -> None:
    keys = "{" + redis_prefix + "}"  # the prefix in braces: one slot for them all
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(b.url, "u1")) as ws,
    ):
        assert (await recv(ws))["type"] == "hello"
        # Ingest: two valid entries and an invalid one between them, through the stream.
        for payload in ({"user_id": "u1", "type": "t", "title": "ingest-0"},
                        {"user_id": "u1", "type": "t"},
                        {"user_id": "u1", "type": "t", "title": "ingest-1"}):
            await backend.xadd(f"{keys}ingest", {"payload": orjson.dumps(payload)})
        # Two instances share the stream, so the two may be applied in either order.
        titles = [(await recv(ws))["data"]["title"] for _ in range(2)]
        assert sorted(titles) == ["ingest-0", "ingest-1"]
        await until(lambda: _length(backend, f"{keys}ingest:dead", 1))
        [(_, dead)] = await backend.xrange(f"{keys}ingest:dead")
        assert (dead[b"source"], orjson.loads(dead[b"payload"])) == (
            b"stream", {"user_id": "u1", "type": "t"})
        # Every entry is acknowledged, the rejected one too.
        await until(lambda: _pending(backend, f"{keys}ingest", 0))

        # The fire-and-forget channel: applied once, by the instance holding the lease.
        await until(lambda: _exists(backend, f"{keys}publish:leader"))
        message = orjson.dumps({"user_id": "u1", "type": "t", "title": "published"})
        assert await backend.publish(f"{keys}publish", message) >= 1
        frame = await recv(ws)
        assert (frame["seq"], frame["data"]["title"]) == (3, "published")

        # An action choice reaches the {prefix}actions stream.
        r = await http_a.post("/api/notifications", headers=SERVICE, json={
            "user_id": "u1", "type": "friend_request", "title": "From Ada",
            "actions": BUTTONS})
        assert r.status_code == 201, r.text
        offered = r.json()["items"][0]
        assert (await recv(ws))["seq"] == 4
        r = await http_b.post(f"/api/notifications/{offered['id']}/actions/accept",
                              headers=auth("u1"))
        assert r.status_code == 200, r.text
        await until(lambda: _length(backend, f"{keys}actions", 1))
        [(_, choice)] = await backend.xrange(f"{keys}actions")
        assert (choice[b"notification_id"], choice[b"action_id"]) == (
            str(offered["id"]).encode(), b"accept")
        assert (await recv(ws))["type"] == "notification.updated"
        await quiet(ws)
    no_tracebacks(a, b)


async def _length(client: RedisCluster, key: str, n: int) -> bool:
    return int(await client.xlen(key)) == n


async def _pending(client: RedisCluster, key: str, n: int) -> bool:
    return int((await client.xpending(key, "notifyhub"))["pending"]) == n


async def _exists(client: RedisCluster, key: str) -> bool:
    return bool(await client.exists(key))


async def test_four_ingest_streams_over_the_three_masters_are_all_read(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str,
    backend: RedisCluster,
) -> None:
    # Slots of the tags {0}..{3}: 13907, 9842, 5649, 1584; every master gets one or two.
    streams = [f"{redis_prefix}ingest:{{{n}}}" for n in range(4)]
    assert len({backend.get_node_from_key(key).name for key in streams}) == 3
    async with (
        cluster(tmp_path, n=1, database_url=database_url, redis_url=redis_url,
                redis_prefix=redis_prefix, ingest_streams=4) as [hub],
        ws_connect(ws_url(hub.url, "u1")) as ws,
    ):
        assert (await recv(ws))["type"] == "hello"
        for n, key in enumerate(streams):
            payload = orjson.dumps({"user_id": "u1", "type": "t", "title": f"via {n}"})
            await backend.xadd(key, {"payload": payload})
        titles = sorted([(await recv(ws))["data"]["title"] for _ in streams])
        assert titles == ["via 0", "via 1", "via 2", "via 3"]
        await backend.xadd(streams[1], {"payload": b"{not json"})
        await until(lambda: _length(backend, f"{streams[1]}:dead", 1))
        await quiet(ws)
    no_tracebacks(hub)
