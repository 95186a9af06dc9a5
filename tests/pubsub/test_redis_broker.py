"""RedisBroker beyond the contract: several instances, prefixes, probe, Redis faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pubsub.errors import BrokerUnavailable
from pubsub.redis import RedisBroker
from pubsub.session import _raw_stream
from tests.pubsub.test_brokers import WAIT, Harness
from tests.servers import RedisServer, free_port


async def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; fail the test if it does not within WAIT."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout=WAIT)




#: Starts a RedisBroker: (url, prefix, **RedisBroker options) -> its Harness.
StartBroker = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def started() -> AsyncIterator[StartBroker]:
    """Starts RedisBrokers on demand and stops every one of them at the end."""
    harnesses: list[Harness] = []

    async def start(url: str, prefix: str, **options: Any) -> Harness:
        harness = Harness(RedisBroker(url, prefix, **options))
        await harness.broker.start(harness.on_message, harness.on_reconnect)
        harnesses.append(harness)
        return harness

    try:
        yield start
    finally:
        for harness in harnesses:
            await asyncio.wait_for(harness.broker.stop(), timeout=WAIT)


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


async def test_two_brokers_on_one_redis_see_each_others_publishes(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    one, two = await started(redis_url, redis_prefix), await started(redis_url, redis_prefix)
    await one.broker.subscribe("user:alice")
    await two.broker.subscribe("user:alice")
    await one.broker.publish("user:alice", b"from one")
    await two.broker.publish("user:alice", b"from two")
    for harness in (one, two):
        assert await harness.next() == ("user:alice", b"from one")
        assert await harness.next() == ("user:alice", b"from two")


async def test_unsubscribed_channels_leave_no_trace_in_the_subscriber_connection(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    """Messages skip redis-py's per-message handling (pubsub.session); its books of
    unsubscribed channels are kept by hand, so user churn does not grow them."""
    hub = await started(redis_url, redis_prefix)
    await churn(hub, 200)
    session = hub.broker._session
    assert session is not None
    assert session.pubsub.pending_unsubscribe_channels == set()
    assert set(session.pubsub.channels) == {
        hub.broker._probe_wire, f"{redis_prefix}user:u7".encode()
    }
    await hub.broker.publish("user:u7", b"still here")
    assert await hub.next() == ("user:u7", b"still here")


async def churn(hub: Harness, users: int) -> None:
    """Subscribe ``users`` users' channels, then unsubscribe all but ``user:u7``'s."""
    for n in range(users):
        await hub.broker.subscribe(f"user:u{n}")
    for n in range(users):
        if n != 7:
            await hub.broker.unsubscribe(f"user:u{n}")


#: A broker in a process without hiredis (redis-py's own parsers): receives one message,
#: and after unsubscribing keeps only its probe channel.
WITHOUT_HIREDIS = """
import asyncio, sys
sys.modules["hiredis"] = None  # as if it were not installed
from pubsub.redis import RedisBroker

async def main(url, prefix):
    got = asyncio.Queue()
    async def on_reconnect():
        return None
    broker = RedisBroker(url, prefix)
    await broker.start(lambda c, s, m: got.put_nowait((c, s, m)), on_reconnect)
    await broker.subscribe("user:a")
    await broker.publish("user:a", b"hi", 3)
    print(await asyncio.wait_for(got.get(), 10))
    await broker.unsubscribe("user:a")
    print(sorted(broker._session.pubsub.channels) == [broker._probe_wire])
    await broker.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("query", ["", "?protocol=2", "?protocol=3"])
async def test_without_hiredis_each_protocol_still_delivers(
    redis_url: str, redis_prefix: str, query: str
) -> None:
    """redis-py's pure-Python RESP2 parser takes no push handler (pubsub.session)."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", WITHOUT_HIREDIS, redis_url + query, redis_prefix],
        capture_output=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split("\n")[:2] == ["('user:a', 3, b'hi')", "True"]


@pytest.mark.parametrize("query", ["", "?protocol=3"])
async def test_with_hiredis_the_subscriber_reads_its_connection_past_get_message(
    started: StartBroker, redis_url: str, redis_prefix: str, query: str
) -> None:
    """The session's own hiredis reader (pubsub.session, ``_read_raw``) takes over from
    get_message on this redis-py: should a later one keep its socket reader or parser
    elsewhere, get_message would read again, slower, and this fails."""
    hub = await started(redis_url + query, redis_prefix)
    session = hub.broker._session
    assert session is not None and _raw_stream(session.pubsub) is not None
    read_by_redis_py: list[Any] = []
    real = session.pubsub.get_message

    async def get_message(**kwargs: Any) -> Any:  # what the reader would await per message
        read_by_redis_py.append(kwargs)
        return await real(**kwargs)

    session.pubsub.get_message = get_message
    await hub.broker.subscribe("user:a")
    for seq, body in ((3, b"hi"), (4, b"there")):
        await hub.broker.publish("user:a", body, seq)
        assert await hub.next() == ("user:a", body)
    assert hub.seqs == [3, 4] and read_by_redis_py == []
    await hub.broker.unsubscribe("user:a")  # the PubSub's books follow, as get_message's
    assert sorted(session.pubsub.channels) == [hub.broker._probe_wire]


async def test_a_subscriber_connection_killed_by_redis_is_replaced_and_delivers_again(
    started: StartBroker, own_redis: RedisServer, redis_prefix: str
) -> None:
    hub = await started(own_redis.url, redis_prefix)
    await hub.broker.subscribe("user:a")
    async with Redis.from_url(own_redis.url) as client:
        killed = await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await wait_until(lambda: hub.reconnects == 1)
        assert await client.publish(f"{redis_prefix}user:a", b"4\nagain") >= 1
    assert await hub.next() == ("user:a", b"again")


async def test_prefixes_isolate_brokers(started: StartBroker, redis_url: str) -> None:
    a, b = await started(redis_url, new_prefix()), await started(redis_url, new_prefix())
    for harness in (a, b):
        await harness.broker.subscribe("broadcast")
    await b.broker.publish("broadcast", b"for b only")
    await a.broker.publish("broadcast", b"for a only")
    assert await a.next() == ("broadcast", b"for a only")
    assert await b.next() == ("broadcast", b"for b only")


async def test_channels_are_prefixed_on_the_wire(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_url, redis_prefix)
    await hub.broker.subscribe("user:alice")
    async with Redis.from_url(redis_url) as client:
        assert await client.publish(f"{redis_prefix}user:alice", b"5\nraw") == 1
    assert await hub.next() == ("user:alice", b"raw")
    assert hub.seqs == [5]


async def test_the_seq_travels_in_a_header_line_stripped_before_delivery(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_url, redis_prefix)
    await hub.broker.subscribe("user:alice")
    async with Redis.from_url(redis_url) as client, client.pubsub() as watcher:
        await watcher.subscribe(f"{redis_prefix}user:alice")
        await asyncio.wait_for(watcher.get_message(timeout=None), timeout=WAIT)  # subscribed
        await hub.broker.publish_many([("user:alice", 42, b'{"seq":42}'),
                                       ("user:alice", None, b'{"seq":null}')])
        on_wire = []
        while len(on_wire) < 2:
            message = await asyncio.wait_for(watcher.get_message(timeout=None), timeout=WAIT)
            if message is not None and message["type"] == "message":
                on_wire.append(message["data"])
    assert on_wire == [b'42\n{"seq":42}', b'\n{"seq":null}']
    assert [await hub.next(), await hub.next()] == [
        ("user:alice", b'{"seq":42}'), ("user:alice", b'{"seq":null}')
    ]
    assert hub.seqs == [42, None]


@pytest.mark.parametrize("raw", [b'{"seq":1}', b'x\n{"seq":1}', b'0\n{"seq":0}',
                                 b'-3\n{"seq":-3}', b"1" * 30 + b"\n{}"])
async def test_a_message_without_a_valid_seq_header_is_dropped_with_a_warning(
    started: StartBroker, redis_url: str, redis_prefix: str, raw: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = await started(redis_url, redis_prefix)
    await hub.broker.subscribe("user:alice")
    async with Redis.from_url(redis_url) as client:
        assert await client.publish(f"{redis_prefix}user:alice", raw) == 1
    await hub.broker.publish("user:alice", b"sentinel", 7)
    assert await hub.next() == ("user:alice", b"sentinel")
    assert hub.seqs == [7]
    assert "dropped a malformed message on 'user:alice'" in caplog.text


async def test_probe_messages_never_reach_on_message(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_url, redis_prefix, probe_interval=0.05)
    await hub.broker.subscribe("user:alice")
    async with Redis.from_url(redis_url) as client, client.pubsub() as watcher:
        await watcher.psubscribe(f"{redis_prefix}probe:*")
        probes = 0
        while probes < 3:
            message = await asyncio.wait_for(watcher.get_message(timeout=None), timeout=WAIT)
            probes += message is not None and message["type"] == "pmessage"
    await hub.broker.publish("user:alice", b"sentinel")
    assert await hub.next() == ("user:alice", b"sentinel")


async def test_start_raises_broker_unavailable_when_redis_is_unreachable(
    redis_prefix: str,
) -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", redis_prefix, timeout=0.5)
    with pytest.raises(BrokerUnavailable):
        await broker.start(lambda channel, seq, message: None, _nothing)
    assert not broker.healthy
    await asyncio.wait_for(broker.stop(), timeout=WAIT)


async def test_publish_after_stop_raises_broker_unavailable(
    redis_url: str, redis_prefix: str
) -> None:
    harness = Harness(RedisBroker(redis_url, redis_prefix))
    await harness.broker.start(harness.on_message, harness.on_reconnect)
    await asyncio.wait_for(harness.broker.stop(), timeout=WAIT)
    with pytest.raises(BrokerUnavailable):
        await harness.broker.publish("user:alice", b"x")


async def test_redis_restart_resubscribes_calls_on_reconnect_and_delivers_again(
    started: StartBroker, own_redis: RedisServer
) -> None:
    hub = await started(own_redis.url, new_prefix())
    broker = hub.broker
    await broker.subscribe("user:alice")
    await broker.subscribe("user:carol")
    await broker.publish("user:alice", b"before")
    assert await hub.next() == ("user:alice", b"before")

    own_redis.kill()
    await wait_until(lambda: not broker.healthy)
    with pytest.raises(BrokerUnavailable):
        await broker.publish("user:alice", b"lost")
    # Changes made while Redis is away are applied on reconnect.
    await asyncio.wait_for(broker.subscribe("user:bob"), timeout=WAIT)
    await asyncio.wait_for(broker.unsubscribe("user:carol"), timeout=WAIT)
    assert hub.reconnects == 0

    own_redis.start()
    await wait_until(lambda: hub.reconnects == 1)
    await wait_until(lambda: broker.healthy)
    for channel in ("user:carol", "user:alice", "user:bob"):
        await broker.publish(channel, b"after")
    assert await hub.next() == ("user:alice", b"after")
    assert await hub.next() == ("user:bob", b"after")
    assert hub.reconnects == 1


async def test_frozen_redis_is_detected_by_the_probe_and_recovered(
    started: StartBroker,
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = await started(own_redis.url, new_prefix(), probe_interval=0.05, timeout=0.5)
    broker = hub.broker
    await broker.subscribe("user:alice")
    assert own_redis.proc is not None
    # SIGSTOP keeps every socket open but silent: only the probe can notice.
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    await wait_until(lambda: not broker.healthy)
    # A stall shorter than the probe's patience recovers with no reconnect at all (the
    # server buffers everything); wait until the broker has given up on the session.
    await wait_until(lambda: "probe not echoed" in caplog.text)
    os.kill(own_redis.proc.pid, signal.SIGCONT)
    await wait_until(lambda: hub.reconnects >= 1 and broker.healthy)
    await broker.publish("user:alice", b"thawed")
    assert await hub.next() == ("user:alice", b"thawed")


async def test_stop_returns_while_redis_is_down(own_redis: RedisServer) -> None:
    harness = Harness(RedisBroker(own_redis.url, new_prefix()))
    await harness.broker.start(harness.on_message, harness.on_reconnect)
    await harness.broker.subscribe("user:alice")
    own_redis.kill()
    await wait_until(lambda: not harness.broker.healthy)
    await asyncio.wait_for(harness.broker.stop(), timeout=WAIT)
    assert not harness.broker.healthy


async def _nothing() -> None:
    pass


async def publish_burst(harness: Harness, count: int) -> list[tuple[str, bytes]]:
    sent = [(f"user:u{n % 3}", n + 1, b"m%d" % n) for n in range(count)]
    await harness.broker.publish_many(sent)
    return [(channel, message) for channel, _, message in sent]


async def test_a_burst_larger_than_one_script_call_arrives_whole_and_in_order(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_url, redis_prefix)
    for n in range(3):
        await hub.broker.subscribe(f"user:u{n}")
    sent = await publish_burst(hub, 2500)  # more than one script call (1000 each)
    assert [await hub.next() for _ in sent] == sent
    assert hub.seqs == list(range(1, 2501))


async def test_a_flushed_script_is_loaded_again(
    started: StartBroker, redis_url: str, redis_prefix: str
) -> None:
    hub = await started(redis_url, redis_prefix)
    await hub.broker.subscribe("user:u0")
    await hub.broker.publish_many([("user:u0", 1, b"before")])
    assert await hub.next() == ("user:u0", b"before")
    async with Redis.from_url(redis_url) as client:
        await client.script_flush()  # what a Redis restart does to loaded scripts
    await hub.broker.publish_many([("user:u0", 2, b"after")])
    assert await hub.next() == ("user:u0", b"after")


async def test_without_scripting_rights_a_burst_is_published_with_pipelined_publish(
    started: StartBroker, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"noscript{uuid.uuid4().hex[:8]}"
    async with Redis.from_url(redis_url) as client:
        await client.execute_command(
            "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-@scripting"
        )
    try:
        url = redis_url.replace("redis://", f"redis://{user}:pw@", 1)
        hub = await started(url, redis_prefix)
        for n in range(3):
            await hub.broker.subscribe(f"user:u{n}")
        for _ in range(2):  # the first burst finds out, the second goes straight there
            sent = await publish_burst(hub, 10)
            assert [await hub.next() for _ in sent] == sent
        fallbacks = [r for r in caplog.records if "using pipelined PUBLISH" in r.getMessage()]
        assert len(fallbacks) == 1
    finally:
        async with Redis.from_url(redis_url) as client:
            await client.execute_command("ACL", "DELUSER", user)
