"""The Broker contract, checked against every implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from pubsub.broker import Broker
from pubsub.cluster import ClusterBroker
from pubsub.memory import MemoryBroker
from pubsub.redis import RedisBroker

WAIT = 5.0


@dataclass
class Harness:
    """A started broker and everything its handlers were called with."""

    broker: Broker
    received: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    #: The seq each message came with, in the order received.
    seqs: list[int | None] = field(default_factory=list)
    reconnects: int = 0

    def on_message(self, channel: str, seq: int | None, message: bytes) -> None:
        self.seqs.append(seq)
        self.received.put_nowait((channel, message))

    async def on_reconnect(self) -> None:
        self.reconnects += 1

    async def next(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.received.get(), timeout=WAIT)


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_broker(request: pytest.FixtureRequest) -> Callable[[], Broker]:
    if request.param == "memory":
        return MemoryBroker
    prefix: str = request.getfixturevalue("redis_prefix")
    if request.param == "cluster":
        cluster_url: str = request.getfixturevalue("redis_cluster_url")
        return lambda: ClusterBroker(cluster_url, prefix)
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisBroker(url, prefix)


@pytest.fixture
async def hub(make_broker: Callable[[], Broker]) -> AsyncIterator[Harness]:
    harness = Harness(make_broker())
    await harness.broker.start(harness.on_message, harness.on_reconnect)
    try:
        yield harness
    finally:
        await asyncio.wait_for(harness.broker.stop(), timeout=WAIT)


async def test_healthy_after_start(hub: Harness) -> None:
    assert hub.broker.healthy


async def test_publish_reaches_subscriber_of_channel(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.publish("user:alice", b"hello")
    assert await hub.next() == ("user:alice", b"hello")


async def test_unsubscribed_channel_receives_nothing(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.publish("user:bob", b"not for alice")
    await hub.broker.publish("user:alice", b"sentinel")
    assert await hub.next() == ("user:alice", b"sentinel")


async def test_unsubscribe_stops_delivery(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.subscribe("broadcast")
    await hub.broker.unsubscribe("user:alice")
    await hub.broker.publish("user:alice", b"too late")
    await hub.broker.publish("broadcast", b"sentinel")
    assert await hub.next() == ("broadcast", b"sentinel")


async def test_subscriptions_are_not_reference_counted(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.subscribe("user:alice")
    await hub.broker.subscribe("broadcast")
    await hub.broker.unsubscribe("user:alice")
    await hub.broker.publish("user:alice", b"gone")
    await hub.broker.publish("broadcast", b"sentinel")
    assert await hub.next() == ("broadcast", b"sentinel")


async def test_interleaved_subscribe_and_unsubscribe_end_in_last_requested_state(
    hub: Harness,
) -> None:
    broker = hub.broker
    await broker.subscribe("broadcast")
    await asyncio.gather(
        broker.subscribe("user:a"), broker.unsubscribe("user:a"), broker.subscribe("user:a")
    )
    await asyncio.gather(
        broker.unsubscribe("user:b"), broker.subscribe("user:b"), broker.unsubscribe("user:b")
    )
    await broker.publish("user:b", b"unsubscribed last")
    await broker.publish("user:a", b"subscribed last")
    await broker.publish("broadcast", b"sentinel")
    assert await hub.next() == ("user:a", b"subscribed last")
    assert await hub.next() == ("broadcast", b"sentinel")


async def test_messages_arrive_in_publish_order_on_each_channel(hub: Harness) -> None:
    # Per channel (a user's events are in seq order); across channels only one Redis
    # keeps the order, not a cluster whose masters each serve some of the channels.
    await hub.broker.subscribe("user:alice")
    await hub.broker.subscribe("user:bob")
    sent = [(f"user:{'alice' if i % 3 else 'bob'}", str(i).encode()) for i in range(200)]
    for channel, message in sent:
        await hub.broker.publish(channel, message)
    got = [await hub.next() for _ in sent]
    for user in ("user:alice", "user:bob"):
        assert [m for c, m in got if c == user] == [m for c, m in sent if c == user]
    if not isinstance(hub.broker, ClusterBroker):
        assert got == sent  # one Redis (or the process) keeps the order across channels


async def test_bytes_are_delivered_unchanged(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    payloads = [b"", b"\x00\xff\xfe\r\n", "héllo ✓".encode(), bytes(range(256)) * 256]
    for payload in payloads:
        await hub.broker.publish("user:alice", payload)
    assert [await hub.next() for _ in payloads] == [("user:alice", p) for p in payloads]


async def test_publish_without_subscribers_is_harmless(hub: Harness) -> None:
    await hub.broker.publish("user:nobody", b"into the void")
    assert hub.broker.healthy


async def test_on_reconnect_is_not_called_on_start(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.publish("user:alice", b"x")
    await hub.next()
    assert hub.reconnects == 0


async def test_the_seq_arrives_beside_the_unchanged_bytes(hub: Harness) -> None:
    await hub.broker.subscribe("user:alice")
    await hub.broker.publish("user:alice", b"first", 1)
    await hub.broker.publish_many([("user:alice", 2, b"second"), ("user:alice", None, b"x")])
    received = [await hub.next() for _ in range(3)]
    assert received == [("user:alice", b"first"), ("user:alice", b"second"), ("user:alice", b"x")]
    assert hub.seqs == [1, 2, None]
