"""The ``{prefix}publish`` channel reader and its leader lease, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as redis

from pubsub.channel import PublishChannelIngest
from tests.pubsub.test_ingest import (
    TIMEOUT,
    Gate,
    Recorder,
    dead_letters,
    running,
)
from tests.servers import RedisServer
from tests.waiting import eventually


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.Redis]:
    """The test's own client; its socket timeout bounds every command it sends."""
    async with redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT) as client:
        yield client




def reader(redis_url: str, prefix: str, apply: Any, **options: Any) -> PublishChannelIngest:
    options.setdefault("lease_ms", 1500)  # renewed, and retried, every 0.5 s
    return PublishChannelIngest(redis_url, prefix, apply, **options)


async def subscribers(r: redis.Redis, channel: str) -> int:
    """How many connections Redis has subscribed to ``channel``."""
    return int(dict(await r.pubsub_numsub(channel)).get(channel.encode(), 0))


async def _subscribers_are(r: redis.Redis, channel: str, n: int) -> bool:
    return await subscribers(r, channel) == n


async def publish(r: redis.Redis, channel: str, payload: bytes) -> int:
    """PUBLISH; returns how many subscribers Redis delivered the message to."""
    return int(await asyncio.wait_for(r.publish(channel, payload), TIMEOUT))


def leader_of(readers: list[PublishChannelIngest]) -> PublishChannelIngest:
    [leader] = [x for x in readers if x.leading]
    return leader


async def test_publish_channel_messages_are_applied_and_rejects_dead_lettered(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    apply = Recorder()
    dead: list[int] = []
    channel = f"{redis_prefix}publish"
    async with running(reader(redis_url, redis_prefix, apply, on_dead=dead.append)):
        await eventually(lambda: _subscribers_are(r, channel, 1))
        for payload in (b"a", b"bad", b"b"):
            await publish(r, channel, payload)
        await eventually(lambda: b"b" in apply.payloads)
        letters = await eventually(lambda: dead_letters(r, redis_prefix))
    assert apply.payloads == [b"a", b"bad", b"b"]
    assert all(entry_id is None for batch in apply.batches for entry_id, _ in batch)
    assert letters == [{b"payload": b"bad", b"error": b"rejected: bad", b"source": b"publish"}]
    assert dead == [1]


async def test_publish_channel_stop_finishes_the_batch_in_hand_then_releases_the_lease(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    gate, dead = Gate(), []
    channel = f"{redis_prefix}publish"
    ingest = reader(redis_url, redis_prefix, gate, on_dead=dead.append, grace=TIMEOUT)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        await eventually(lambda: _subscribers_are(r, channel, 1))
        await publish(r, channel, b"bad")
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        stopping = asyncio.create_task(ingest.stop())
        await eventually(lambda: ingest.stopping)
        await publish(r, channel, b"late")  # arrives after stop: not applied
        assert not stopping.done()
        gate.release.set()
        await asyncio.wait_for(stopping, TIMEOUT)
    finally:
        gate.release.set()
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert gate.applied == [(None, b"bad")]
    letters = await asyncio.wait_for(dead_letters(r, redis_prefix), TIMEOUT)
    assert letters == [{b"payload": b"bad", b"error": b"rejected: bad", b"source": b"publish"}]
    assert dead == [1]
    assert await subscribers(r, channel) == 0
    assert await r.get(ingest.lease_key) is None


async def test_publish_messages_that_cannot_be_applied_are_parked_in_the_dead_letters(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    apply = Recorder(failures=1)
    channel = f"{redis_prefix}publish"
    async with running(reader(redis_url, redis_prefix, apply)):
        await eventually(lambda: _subscribers_are(r, channel, 1))
        await publish(r, channel, b"lost?")
        letters = await eventually(lambda: dead_letters(r, redis_prefix))
        await publish(r, channel, b"next")
        await eventually(lambda: b"next" in apply.payloads)
    assert letters[0][b"payload"] == b"lost?"
    assert letters[0][b"error"].startswith(b"not applied: ConnectionError")


async def test_two_readers_on_one_prefix_apply_each_of_20_messages_exactly_once(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}publish"
    applies = [Recorder(), Recorder()]
    sent = [f"m{n}".encode() for n in range(20)]
    async with running(reader(redis_url, redis_prefix, applies[0], holder="a", lease_ms=3000)), \
            running(reader(redis_url, redis_prefix, applies[1], holder="b", lease_ms=3000)):
        await eventually(lambda: _subscribers_are(r, channel, 1))
        delivered = [await publish(r, channel, payload) for payload in sent]
        await eventually(lambda: len(applies[0].payloads) + len(applies[1].payloads) >= 20)
        assert await subscribers(r, channel) == 1
    assert delivered == [1] * 20  # Redis handed each message to one subscriber only
    assert sorted(applies[0].payloads + applies[1].payloads) == sorted(sent)
    assert [] in (applies[0].payloads, applies[1].payloads)  # all read by the one leader


async def test_the_leader_renews_its_lease_before_it_expires(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    ingest = reader(redis_url, redis_prefix, Recorder(), holder="a", lease_ms=600)
    key = ingest.lease_key
    async with running(ingest):
        await eventually(lambda: ingest.leading)
        for _ in range(3):  # the TTL runs down below 500 ms and goes up again: renewed
            await eventually(lambda: _pttl(r, key, lambda ms: 0 < ms <= 500))
            await eventually(lambda: _pttl(r, key, lambda ms: ms > 500))
        assert await r.get(key) == b"a"
        assert ingest.leading
        assert await subscribers(r, f"{redis_prefix}publish") == 1


async def _pttl(r: redis.Redis, key: str, check: Callable[[int], bool]) -> bool:
    return check(int(await r.pttl(key)))


async def test_when_the_leader_stops_the_other_takes_over_and_applies_later_messages(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}publish"
    applies = {"a": Recorder(), "b": Recorder()}
    readers = [reader(redis_url, redis_prefix, apply, holder=h) for h, apply in applies.items()]
    async with running(readers[0]), running(readers[1]):
        await eventually(lambda: any(x.leading for x in readers))
        first = leader_of(readers)
        assert await publish(r, channel, b"before") == 1
        await eventually(lambda: applies[first.holder].payloads == [b"before"])
        await asyncio.wait_for(first.stop(), TIMEOUT)
        other = await eventually(lambda: next((x for x in readers if x.leading), None))
        assert other is not first
        assert await r.get(other.lease_key) == other.holder.encode()
        assert await publish(r, channel, b"after") == 1
        await eventually(lambda: applies[other.holder].payloads == [b"after"])
    assert applies[first.holder].payloads == [b"before"]


async def test_stop_releases_the_lease_so_another_instance_takes_over_at_once(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    # A 60 s lease: had it not been released, the next reader could not have it for 60 s.
    first = reader(redis_url, redis_prefix, Recorder(), holder="a", lease_ms=60_000)
    async with running(first):
        await eventually(lambda: first.leading)
        assert await r.get(first.lease_key) == b"a"
    assert await r.get(first.lease_key) is None
    apply = Recorder()
    second = reader(redis_url, redis_prefix, apply, holder="b", lease_ms=60_000)
    async with running(second):
        await eventually(lambda: second.leading)
        assert await publish(r, f"{redis_prefix}publish", b"next") == 1
        await eventually(lambda: apply.payloads == [b"next"])


async def test_a_reader_whose_lease_was_taken_unsubscribes_and_stops_applying(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}publish"
    apply = Recorder()
    ingest = reader(redis_url, redis_prefix, apply, holder="a")
    async with running(ingest):
        await eventually(lambda: _subscribers_are(r, channel, 1))
        assert await publish(r, channel, b"mine") == 1
        await eventually(lambda: apply.payloads == [b"mine"])
        await r.set(ingest.lease_key, "intruder", px=60_000)  # say, a lease that lapsed
        await eventually(lambda: _subscribers_are(r, channel, 0))
        assert not ingest.leading
        assert await publish(r, channel, b"not yours") == 0
        assert await r.get(ingest.lease_key) == b"intruder"  # not taken back while held
        await r.delete(ingest.lease_key)  # the intruder lets go: the reader takes over again
        await eventually(lambda: _subscribers_are(r, channel, 1))
        assert await publish(r, channel, b"back") == 1
        await eventually(lambda: b"back" in apply.payloads)
    assert apply.payloads == [b"mine", b"back"]


async def test_a_leader_losing_its_lease_mid_apply_unsubscribes_at_once_and_ends_the_batch(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}publish"
    gate = Gate()
    ingest = reader(redis_url, redis_prefix, gate, holder="a", grace=TIMEOUT)
    async with running(ingest):
        try:
            await eventually(lambda: _subscribers_are(r, channel, 1))
            assert await publish(r, channel, b"held") == 1
            await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
            await r.set(ingest.lease_key, "intruder", px=60_000)
            # Unsubscribed while the apply is still stuck, not only after it returns.
            await eventually(lambda: _subscribers_are(r, channel, 0))
            assert await publish(r, channel, b"late") == 0
        finally:
            gate.release.set()
        await eventually(lambda: gate.applied)
    assert gate.applied == [(None, b"held")]  # it was read while the lease was held


async def test_after_redis_restarts_one_leader_is_back_and_messages_are_applied_once(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}publish"
    applies = [Recorder(), Recorder()]
    url = own_redis.url
    async with redis.Redis.from_url(url, socket_timeout=TIMEOUT) as r, \
            running(reader(url, redis_prefix, applies[0], holder="a")), \
            running(reader(url, redis_prefix, applies[1], holder="b")):
        await eventually(lambda: _subscribers_are(r, channel, 1))
        assert await publish(r, channel, b"before") == 1
        await eventually(lambda: applies[0].payloads + applies[1].payloads == [b"before"])
        await asyncio.wait_for(asyncio.to_thread(own_redis.kill), TIMEOUT)
        await asyncio.wait_for(asyncio.to_thread(own_redis.start), TIMEOUT)
        await r.connection_pool.disconnect()  # the test's own connection died too
        await eventually(lambda: _subscribers_are(r, channel, 1), TIMEOUT + 10)
        sent = [f"after{n}".encode() for n in range(10)]
        delivered = [await publish(r, channel, payload) for payload in sent]
        await eventually(lambda: len(applies[0].payloads) + len(applies[1].payloads) >= 11)
        assert await subscribers(r, channel) == 1
    assert delivered == [1] * 10
    assert sorted(applies[0].payloads + applies[1].payloads) == sorted([b"before", *sent])
