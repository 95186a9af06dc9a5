"""ClusterBroker beyond the contract: bursts over every master, a stale slot map after a
reshard, a cluster without scripting rights. On the session's 3+3 cluster."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from pubsub.cluster import ClusterBroker, tag_for_slot
from pubsub.session import _raw_stream
from tests.pubsub.test_brokers import Harness
from tests.pubsub.test_redis_broker import churn, wait_until
from tests.servers import RedisClusterServers

#: Starts a ClusterBroker: (url, prefix, **options) -> its Harness.
StartBroker = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def started() -> AsyncIterator[StartBroker]:
    """Starts ClusterBrokers on demand and stops every one of them at the end."""
    harnesses: list[Harness] = []

    async def start(url: str, prefix: str, **options: Any) -> Harness:
        harness = Harness(ClusterBroker(url, prefix, **options))
        await harness.broker.start(harness.on_message, harness.on_reconnect)
        harnesses.append(harness)
        return harness

    try:
        yield start
    finally:
        for harness in harnesses:
            await asyncio.wait_for(harness.broker.stop(), timeout=10)


def per_channel(received: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for channel, message in received:
        found.setdefault(channel, []).append(message)
    return found


async def test_a_burst_over_every_master_arrives_whole_and_in_order_per_channel(
    started: StartBroker, redis_cluster_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_cluster_url, redis_prefix)
    channels = [f"user:u{n}" for n in range(12)]
    slots = {key_slot(f"{redis_prefix}{c}".encode()) for c in channels}
    assert len(slots) == 12
    for channel in channels:
        await hub.broker.subscribe(channel)
    sent = [(channels[n % 12], n + 1, b"m%d" % n) for n in range(2500)]
    await hub.broker.publish_many(sent)  # one script per master and 1000 messages
    received = [await hub.next() for _ in sent]
    assert per_channel(received) == per_channel([(c, m) for c, _, m in sent])
    assert sorted(s for s in hub.seqs if s is not None) == list(range(1, 2501))


async def test_a_publisher_with_a_stale_slot_map_reaches_the_slots_new_owner(
    started: StartBroker, redis_cluster: RedisClusterServers, redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pubsub.cluster")
    source, target = redis_cluster.master_ports()[:2]
    user = "m{" + tag_for_slot(redis_cluster.first_slot(source)) + "}"
    subscriber = await started(redis_cluster.url, redis_prefix)
    publisher = await started(redis_cluster.url, redis_prefix)  # never told of the move
    await subscriber.broker.subscribe(f"user:{user}")
    await asyncio.to_thread(redis_cluster.reshard, source, target)
    # The source dropped the subscription: the subscriber re-links on the new owner.
    await wait_until(lambda: subscriber.reconnects == 1 and subscriber.broker.healthy)
    assert "(its slot moved)" in caplog.text
    # The publisher's script runs on the old owner, which returns the channel as not
    # its own; the pipelined SPUBLISH it then sends for that channel follows MOVED.
    await publisher.broker.publish_many([(f"user:{user}", 1, b"after the move")])
    assert await subscriber.next() == (f"user:{user}", b"after the move")
    assert "1 channel(s) served elsewhere now; per channel, following MOVED" in caplog.text
    await publisher.broker.publish_many([(f"user:{user}", 2, b"and again")])
    assert await subscriber.next() == (f"user:{user}", b"and again")
    assert "from now on" not in caplog.text  # scripting was not given up
    assert publisher.reconnects == 0


async def test_without_scripting_rights_a_burst_is_published_with_pipelined_spublish(
    started: StartBroker, redis_cluster: RedisClusterServers, redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = f"noscript{uuid.uuid4().hex[:8]}"
    for port in redis_cluster.procs:  # ACL users are per node
        async with Redis(host="127.0.0.1", port=port) as node:
            await node.execute_command(
                "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-@scripting")
    try:
        url = redis_cluster.url.replace("://", f"://{user}:pw@", 1)
        hub = await started(url, redis_prefix)
        channels = [f"user:u{n}" for n in range(6)]
        for channel in channels:
            await hub.broker.subscribe(channel)
        for _ in range(2):  # the first burst finds out, the second goes straight there
            sent = [(channels[n % 6], n + 1, b"m%d" % n) for n in range(30)]
            await hub.broker.publish_many(sent)
            received = [await hub.next() for _ in sent]
            assert per_channel(received) == per_channel([(c, m) for c, _, m in sent])
        fallbacks = [r for r in caplog.records if "pipelined SPUBLISH" in r.getMessage()]
        assert len(fallbacks) == 1
    finally:
        for port in redis_cluster.procs:
            async with Redis(host="127.0.0.1", port=port) as node:
                await node.execute_command("ACL", "DELUSER", user)


async def test_unsubscribed_shard_channels_leave_no_trace_in_the_subscriber_connections(
    started: StartBroker, redis_cluster_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_cluster_url, redis_prefix)
    await churn(hub, 60)
    link = hub.broker._link
    assert link is not None and len(link) == 3
    kept = set()
    for shard in link.values():
        assert _raw_stream(shard.session.pubsub) is not None  # read past get_message
        assert shard.session.pubsub.pending_unsubscribe_shard_channels == set()
        kept |= set(shard.session.pubsub.shard_channels) - {shard.probe}
    assert kept == {f"{redis_prefix}user:u7".encode()}
    await hub.broker.publish("user:u7", b"still here")
    assert await hub.next() == ("user:u7", b"still here")
