"""The Redis side of stream ingest against a real Redis, with a recording ``apply`` callback.

The helpers here are shared with ``test_channel.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as redis

from pubsub.ingest import GROUP, StreamIngest
from pubsub.runner import Entry, Outcome, Runner
from tests.waiting import eventually

TIMEOUT = 10


class Recorder:
    """An ``apply`` that records batches, rejects ``b"bad"`` and can fail a few times."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[Entry]] = []
        self.failures = failures
        self.calls = 0

    async def __call__(self, entries: list[Entry]) -> list[Outcome]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        self.batches.append(entries)
        return ["rejected: bad" if payload == b"bad" else None for _, payload in entries]

    @property
    def payloads(self) -> list[bytes | None]:
        return [payload for batch in self.batches for _, payload in batch]


class Gate:
    """An ``apply`` that waits for ``release`` (maybe forever) before settling a batch."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.applied: list[Entry] = []

    async def __call__(self, entries: list[Entry]) -> list[Outcome]:
        self.entered.set()
        await self.release.wait()
        self.applied += entries
        return ["rejected: bad" if payload == b"bad" else None for _, payload in entries]


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.Redis]:
    """The test's own client; its socket timeout bounds every command it sends."""
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
    yield client
    await client.aclose()


@asynccontextmanager
async def running(ingest: Runner) -> AsyncIterator[Any]:
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        yield ingest
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)


async def pending(r: redis.Redis, key: str) -> int:
    return int((await r.xpending(key, GROUP))["pending"])


async def dead_letters(r: redis.Redis, prefix: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await r.xrange(f"{prefix}ingest:dead")]


def stream(redis_url: str, prefix: str, apply: Any, **options: Any) -> StreamIngest:
    options.setdefault("claim_idle_ms", 200)
    return StreamIngest(redis_url, prefix, apply, **options)


async def test_an_entry_is_applied_then_acknowledged(r: redis.Redis, redis_url: str,
                                                     redis_prefix: str) -> None:
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply)):
        entry_id = await r.xadd(f"{redis_prefix}ingest", {"payload": b"one"})
        await eventually(lambda: apply.batches)
        assert apply.batches == [[(entry_id.decode(), b"one")]]
        await eventually(lambda: _none_pending(r, redis_prefix))


async def _none_pending(r: redis.Redis, prefix: str) -> bool:
    return await pending(r, f"{prefix}ingest") == 0


async def test_rejected_entry_is_dead_lettered_and_the_next_one_still_applied(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    apply = Recorder()
    dead: list[int] = []
    async with running(stream(redis_url, redis_prefix, apply, on_dead=dead.append)):
        bad_id = await r.xadd(f"{redis_prefix}ingest", {"payload": b"bad"})
        await r.xadd(f"{redis_prefix}ingest", {"other": b"no payload field"})
        await r.xadd(f"{redis_prefix}ingest", {"payload": b"good"})
        await eventually(lambda: b"good" in apply.payloads)
        await eventually(lambda: _none_pending(r, redis_prefix))
    assert apply.payloads == [b"bad", None, b"good"]
    letters = await asyncio.wait_for(dead_letters(r, redis_prefix), TIMEOUT)
    assert letters[0] == {b"payload": b"bad", b"error": b"rejected: bad",
                          b"source": b"stream", b"id": bad_id}
    assert sum(dead) == 1


async def test_entries_stay_pending_while_apply_fails_and_are_applied_after_recovery(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    apply = Recorder(failures=3)
    async with running(stream(redis_url, redis_prefix, apply, claim_idle_ms=30_000)):
        await r.xadd(f"{redis_prefix}ingest", {"payload": b"x"})
        await eventually(lambda: apply.calls >= 2)
        assert await asyncio.wait_for(pending(r, f"{redis_prefix}ingest"), TIMEOUT) == 1
        await eventually(lambda: apply.batches)
        await eventually(lambda: _none_pending(r, redis_prefix))
    assert apply.payloads == [b"x"]
    assert await asyncio.wait_for(dead_letters(r, redis_prefix), TIMEOUT) == []


async def test_a_burst_is_applied_in_batches(r: redis.Redis, redis_url: str,
                                             redis_prefix: str) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for n in range(300):
            pipe.xadd(f"{redis_prefix}ingest", {"payload": str(n).encode()})
        await asyncio.wait_for(pipe.execute(), TIMEOUT)
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply, batch=100)):
        await eventually(lambda: len(apply.payloads) == 300)
    assert apply.payloads == [str(n).encode() for n in range(300)]
    assert max(len(batch) for batch in apply.batches) == 100


async def _reader_blocked(r: redis.Redis) -> bool:
    return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in await r.client_list())


async def test_a_pipelined_burst_reaching_a_blocked_reader_is_applied_as_one_batch(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    # Redis answers a blocked XREADGROUP right after the burst's first XADD; the rest
    # must not wait for that one entry to be applied and acknowledged.
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply, claim_idle_ms=30_000)):
        await eventually(lambda: _reader_blocked(r))
        async with r.pipeline(transaction=False) as pipe:
            for n in range(5):
                pipe.xadd(f"{redis_prefix}ingest", {"payload": str(n).encode()})
            await asyncio.wait_for(pipe.execute(), TIMEOUT)
        await eventually(lambda: len(apply.payloads) == 5)
    assert [len(batch) for batch in apply.batches] == [5]


async def test_entries_of_a_dead_consumer_are_taken_over(r: redis.Redis, redis_url: str,
                                                         redis_prefix: str) -> None:
    key = f"{redis_prefix}ingest"
    await r.xgroup_create(key, GROUP, id="0", mkstream=True)
    ids = [await r.xadd(key, {"payload": f"p{n}".encode()}) for n in range(3)]
    # "dead-1" reads the entries and dies without acknowledging them.
    await asyncio.wait_for(r.xreadgroup(GROUP, "dead-1", {key: ">"}, count=10), TIMEOUT)
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply, consumer="alive-1")):
        await eventually(lambda: len(apply.payloads) == 3)
        await eventually(lambda: _none_pending(r, redis_prefix))
    assert sorted(entry_id for batch in apply.batches for entry_id, _ in batch) == [
        i.decode() for i in ids
    ]


async def test_an_entry_delivered_too_often_is_dead_lettered_as_poison(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}ingest"
    await r.xgroup_create(key, GROUP, id="0", mkstream=True)
    await r.xadd(key, {"payload": b"crashes everyone"})
    await asyncio.wait_for(r.xreadgroup(GROUP, "dead-1", {key: ">"}, count=10), TIMEOUT)
    for _ in range(5):  # redelivered again and again, never acknowledged
        await asyncio.wait_for(r.xreadgroup(GROUP, "dead-1", {key: "0"}, count=10), TIMEOUT)
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply, max_deliveries=5)):
        letters = await eventually(lambda: dead_letters(r, redis_prefix))
        await eventually(lambda: _none_pending(r, redis_prefix))
    assert apply.batches == []
    assert letters[0][b"payload"] == b"crashes everyone"
    assert b"poison" in letters[0][b"error"]


async def test_acknowledged_entries_are_trimmed_from_the_stream(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}ingest"
    async with r.pipeline(transaction=False) as pipe:
        for n in range(500):
            pipe.xadd(key, {"payload": str(n).encode()})
        await asyncio.wait_for(pipe.execute(), TIMEOUT)
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply)):
        await eventually(lambda: len(apply.payloads) == 500)
        await eventually(lambda: _shorter_than(r, key, 500))


async def _shorter_than(r: redis.Redis, key: str, length: int) -> bool:
    return int(await r.xlen(key)) < length


async def test_ingest_goes_on_after_redis_restarts(own_redis: Any, redis_prefix: str) -> None:
    redis_server, redis_url = own_redis, own_redis.url
    r = redis.Redis.from_url(redis_url)
    apply = Recorder()
    async with r, running(stream(redis_url, redis_prefix, apply)):
        await r.xadd(f"{redis_prefix}ingest", {"payload": b"before"})
        await eventually(lambda: apply.payloads == [b"before"])
        await asyncio.wait_for(asyncio.to_thread(redis_server.kill), TIMEOUT)
        await asyncio.sleep(0.3)  # let the reader notice
        await asyncio.wait_for(asyncio.to_thread(redis_server.start), TIMEOUT + 5)
        await r.connection_pool.disconnect()  # the test's own connection died too
        await r.xadd(f"{redis_prefix}ingest", {"payload": b"after"})
        await eventually(lambda: b"after" in apply.payloads, TIMEOUT + 10)
    assert apply.payloads == [b"before", b"after"]


async def test_stop_wakes_a_blocked_read_instead_of_waiting_for_it(redis_url: str,
                                                                 redis_prefix: str) -> None:
    # The read blocks for 5 s and the grace is longer: only the wake-up returns it in time.
    ingest = stream(redis_url, redis_prefix, Recorder(), block_ms=60_000, claim_idle_ms=600_000,
                    grace=TIMEOUT)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    await asyncio.sleep(0.2)
    await asyncio.wait_for(ingest.stop(), 2)


async def test_stop_lets_the_batch_being_applied_finish_and_be_acknowledged(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}ingest"
    async with r.pipeline(transaction=False) as pipe:  # queued first: they arrive as one batch
        pipe.xadd(key, {"payload": b"good"})
        pipe.xadd(key, {"payload": b"bad"})
        good, bad = await asyncio.wait_for(pipe.execute(), TIMEOUT)
    gate, dead = Gate(), []
    ingest = stream(redis_url, redis_prefix, gate, on_dead=dead.append, grace=TIMEOUT)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        stopping = asyncio.create_task(ingest.stop())
        await eventually(lambda: ingest.stopping)
        late = await r.xadd(key, {"payload": b"late"})  # added after stop: not this one's
        assert not stopping.done()  # waiting for the batch, not cancelling it
        gate.release.set()
        await asyncio.wait_for(stopping, TIMEOUT)
    finally:
        gate.release.set()
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert gate.applied == [(good.decode(), b"good"), (bad.decode(), b"bad")]
    assert await asyncio.wait_for(pending(r, key), TIMEOUT) == 0  # acked; "late" never read
    [group] = await asyncio.wait_for(r.xinfo_groups(key), TIMEOUT)
    assert group["last-delivered-id"] == bad != late
    letters = await asyncio.wait_for(dead_letters(r, redis_prefix), TIMEOUT)
    assert [f[b"payload"] for f in letters] == [b"bad"]
    assert dead == [1]


async def test_stop_gives_up_after_the_grace_and_leaves_the_batch_for_a_takeover(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}ingest"
    gate = Gate()  # never released: the apply never finishes
    ingest = stream(redis_url, redis_prefix, gate, consumer="stuck-1", grace=0.2)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        entry_id = await r.xadd(key, {"payload": b"p"})
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert gate.applied == []
    summary = await asyncio.wait_for(r.xpending(key, GROUP), TIMEOUT)
    assert summary["pending"] == 1
    assert [c["name"] for c in summary["consumers"]] == [b"stuck-1"]
    apply = Recorder()
    async with running(stream(redis_url, redis_prefix, apply, consumer="next-1")):
        await eventually(lambda: apply.payloads == [b"p"])
        await eventually(lambda: _none_pending(r, redis_prefix))
    assert apply.batches == [[(entry_id.decode(), b"p")]]


async def test_stop_returns_after_the_grace_while_redis_hangs_before_the_ack(
    r: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}ingest"
    gate = Gate()
    ingest = stream(redis_url, redis_prefix, gate, grace=0.3, claim_idle_ms=600_000)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        await r.xadd(key, {"payload": b"p"})
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        # Writes (the XACK) hang for 30 s; the stop must not wait for them.
        await r.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        try:
            gate.release.set()
            await asyncio.wait_for(ingest.stop(), TIMEOUT)
            # Applied but not acknowledged: redelivered later (idempotent, see hub.ingest).
            assert await asyncio.wait_for(pending(r, key), TIMEOUT) == 1
        finally:
            await r.execute_command("CLIENT", "UNPAUSE")
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert gate.applied and gate.applied[0][1] == b"p"


async def test_stream_ingest_keeps_retrying_while_redis_is_unreachable() -> None:
    ingest = StreamIngest("redis://127.0.0.1:1/0", "x:", Recorder())
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    await asyncio.sleep(0.3)
    await asyncio.wait_for(ingest.stop(), 2)
