"""Redis ingest end to end: real Redis stream/channel → hub.ingest → real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as redis

from db.pool import create_pool
from hub.events import user_channel
from hub.ingest import Applier, Ingest
from hub.services import Services
from hub.settings import Settings
from pubsub.ingest import GROUP, StreamIngest
from pubsub.memory import MemoryBroker
from pubsub.runner import Entry, Outcome
from tests import waiting
from tests.api.test_contacts import zone_only_python_knows
from tests.conftest import SECRET

TIMEOUT = 15
#: Checks here wait on the database too: they get this module's longer bound.
eventually = partial(waiting.eventually, timeout=TIMEOUT)


@pytest.fixture
async def svc(database_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Services]:
    pool = await asyncio.wait_for(create_pool(database_url), TIMEOUT)
    settings = Settings(database_url=database_url, jwt_secret=SECRET, redis_url=redis_url,
                        redis_prefix=redis_prefix, ingest_claim_idle_seconds=0.2,
                        ingest_stop_grace_seconds=3)
    yield Services(settings, pool, MemoryBroker())
    await asyncio.wait_for(pool.close(), TIMEOUT)


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.Redis]:
    """The test's own client; its socket timeout bounds every command it sends."""
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
    yield client
    await client.aclose()


class Counting:
    """Wraps an applier: records batch sizes and can fail the first ``failures`` calls."""

    def __init__(self, inner: Applier, failures: int = 0) -> None:
        self.inner, self.failures = inner, failures
        self.sizes: list[int] = []
        self.raised = 0

    async def __call__(self, entries: list[Entry]) -> list[Outcome]:
        self.sizes.append(len(entries))
        if self.failures:
            self.failures -= 1
            self.raised += 1
            raise ConnectionError("database is down")
        try:
            return await self.inner(entries)
        except Exception:
            self.raised += 1
            raise


@asynccontextmanager
async def stream_ingest(svc: Services, apply: Any, **options: Any) -> AsyncIterator[StreamIngest]:
    s = svc.settings
    assert s.redis_url
    options.setdefault("claim_idle_ms", 200)
    ingest = StreamIngest(s.redis_url, s.redis_prefix, apply, **options)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        yield ingest
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)


async def xadd(r: redis.Redis, svc: Services, body: Any) -> str:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    entry_id = await asyncio.wait_for(
        r.xadd(f"{svc.settings.redis_prefix}ingest", {"payload": payload}), TIMEOUT
    )
    return entry_id.decode()


async def count(svc: Services, user_id: str) -> int:
    return int(await asyncio.wait_for(
        svc.pool.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", user_id),
        TIMEOUT,
    ))


async def none_pending(r: redis.Redis, svc: Services) -> bool:
    summary = await r.xpending(f"{svc.settings.redis_prefix}ingest", GROUP)
    return int(summary["pending"]) == 0


async def dead_letters(r: redis.Redis, svc: Services) -> list[dict[bytes, bytes]]:
    return [f for _, f in await r.xrange(f"{svc.settings.redis_prefix}ingest:dead")]


async def test_a_stream_entry_is_stored_published_and_acknowledged(
    svc: Services, r: redis.Redis
) -> None:
    received: list[bytes] = []
    await svc.broker.start(lambda channel, seq, message: received.append(message), _nothing)
    await svc.broker.subscribe(user_channel("u1"))
    async with stream_ingest(svc, Applier(svc, "stream")):
        await xadd(r, svc, {"user_id": "u1", "type": "grade_posted", "template": "grade_posted",
                            "data": {"grade": "A-", "assignment": "Essay 2", "grade_id": 5}})
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
    row = await svc.pool.fetchrow("SELECT type, body FROM notifications WHERE user_id = 'u1'")
    assert (row["type"], row["body"]) == ("grade_posted", "Your grade for Essay 2 is A-")
    assert [orjson.loads(m)["type"] for m in received] == ["notification.created"]
    assert svc.metrics.ingest_applied.labels(source="stream")._value.get() == 1


async def _nothing() -> None:
    return None


async def test_an_entry_without_a_key_is_applied_once_even_if_delivered_twice(
    svc: Services, r: redis.Redis
) -> None:
    key = f"{svc.settings.redis_prefix}ingest"
    await r.xgroup_create(key, GROUP, id="0", mkstream=True)
    entry_id = await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "once"})
    # Consumer "dead-1" reads the entry, commits it, and dies before acknowledging.
    reply = await asyncio.wait_for(r.xreadgroup(GROUP, "dead-1", {key: ">"}), TIMEOUT)
    payload = reply[0][1][0][1][b"payload"]
    applier = Applier(svc, "stream")
    assert await asyncio.wait_for(applier([(entry_id, payload)]), TIMEOUT) == [None]
    assert await asyncio.wait_for(applier([(entry_id, payload)]), TIMEOUT) == [None]
    async with stream_ingest(svc, applier):  # takes the entry over and applies it again
        await eventually(lambda: none_pending(r, svc))
    assert await count(svc, "u1") == 1


async def test_entries_sharing_an_idempotency_key_create_one_notification(
    svc: Services, r: redis.Redis
) -> None:
    body = {"user_id": "u1", "type": "t", "title": "hi", "idempotency_key": "order-7"}
    async with stream_ingest(svc, Applier(svc, "stream")):
        await xadd(r, svc, body)
        await xadd(r, svc, body)
        await xadd(r, svc, {"user_id": "u2", "type": "t", "title": "after"})
        await eventually(lambda: count(svc, "u2"))
        await eventually(lambda: none_pending(r, svc))
    assert await count(svc, "u1") == 1


async def test_invalid_entries_are_dead_lettered_and_valid_ones_in_the_same_batch_stored(
    svc: Services, r: redis.Redis
) -> None:
    bad = [
        b"{not json",
        orjson.dumps({"user_id": "u1", "type": "t"}),  # neither title nor template
        orjson.dumps({"user_id": "u1", "type": "t", "template": "no_such_template"}),
        orjson.dumps({"user_id": "u1", "type": "t", "title": "nul \u0000 byte"}),
    ]
    good = {"user_id": "u1", "type": "t", "title": "still applied"}
    applier = Applier(svc, "stream")
    counting = Counting(applier)
    for payload in bad:  # queued before the reader starts, so they arrive as one batch
        await xadd(r, svc, payload)
    await xadd(r, svc, good)
    async with stream_ingest(svc, counting, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
        letters = await eventually(lambda: _at_least(dead_letters(r, svc), 4))
    assert counting.sizes == [5]
    assert [f[b"payload"] for f in letters] == bad
    errors = [f[b"error"].decode() for f in letters]
    assert "not valid JSON" in errors[0]
    assert "template or title is required" in errors[1]
    assert "unknown template" in errors[2]
    assert "NUL characters are not allowed" in errors[3]
    assert svc.metrics.ingest_dead._value.get() == 4
    title = await svc.pool.fetchval("SELECT title FROM notifications WHERE user_id = 'u1'")
    assert title == "still applied"


@pytest.fixture
def python_only_zone(tmp_path: Path) -> Iterator[str]:
    with zone_only_python_knows(tmp_path) as zone:
        yield zone


async def test_an_entry_with_a_time_zone_postgresql_does_not_know_is_dead_lettered_alone(
    svc: Services, r: redis.Redis, python_only_zone: str
) -> None:
    bad = orjson.dumps({"user_id": "u1", "type": "t", "title": "x",
                        "contact": {"email": "u1@example.com", "time_zone": python_only_zone}})
    good = {"user_id": "u2", "type": "t", "title": "still applied",
            "contact": {"email": "u2@example.com", "time_zone": "Asia/Tokyo"}}
    applier = Applier(svc, "stream")
    counting = Counting(applier)
    await xadd(r, svc, bad)
    await xadd(r, svc, good)
    async with stream_ingest(svc, counting, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u2"))
        await eventually(lambda: none_pending(r, svc))
        [letter] = await eventually(lambda: _at_least(dead_letters(r, svc), 1))
    assert counting.sizes == [2]
    assert letter[b"payload"] == bad
    assert "PostgreSQL" in letter[b"error"].decode()
    assert await count(svc, "u1") == 0
    zones = dict(await svc.pool.fetch("SELECT user_id, time_zone FROM contacts"))
    assert zones == {"u2": "Asia/Tokyo"}


def nested(depth: int) -> bytes:
    """A create whose ``data`` nests arrays ``depth`` levels deep (about 2 KB at 990)."""
    deep = "[" * depth + "]" * depth
    return b'{"user_id":"u1","type":"t","title":"deep","data":{"x":%s}}' % deep.encode()


async def test_a_deeply_nested_entry_is_dead_lettered_and_the_entries_after_it_applied(
    svc: Services, r: redis.Redis
) -> None:
    applier = Applier(svc, "stream")
    for depth in (990, 300):  # deeper than Python's recursion, deeper than orjson encodes
        await xadd(r, svc, nested(depth))
    await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "behind it"})
    async with stream_ingest(svc, applier, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
        letters = await eventually(lambda: _at_least(dead_letters(r, svc), 2))
    errors = [f[b"error"].decode() for f in letters]
    assert all("more than 32 levels deep" in error for error in errors), errors
    assert await count(svc, "u1") == 1


async def test_an_entry_that_fails_for_a_reason_of_its_own_is_dead_lettered_not_retried(
    svc: Services, r: redis.Redis
) -> None:
    # An error only this entry causes, and not one of the kinds the hub names: a trigger
    # that refuses it. Only failures of the database itself are retried.
    await svc.pool.execute("""
        CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'boom' THEN RAISE EXCEPTION 'boom is refused'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_boom BEFORE INSERT ON notifications
        FOR EACH ROW EXECUTE FUNCTION refuse_boom();
    """)
    applier = Applier(svc, "stream")
    counting = Counting(applier)
    await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "boom"})
    await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "fine"})
    async with stream_ingest(svc, counting, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
        [letter] = await eventually(lambda: _at_least(dead_letters(r, svc), 1))
    assert counting.raised == 0
    assert "boom is refused" in letter[b"error"].decode()
    assert await count(svc, "u1") == 1


async def test_an_entry_claiming_a_reserved_stream_key_is_dead_lettered_with_the_reason(
    svc: Services, r: redis.Redis
) -> None:
    applier = Applier(svc, "stream")
    taken = await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "first"})
    # An entry may not name another entry's implicit key: it would silently replay it.
    await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "second",
                        "idempotency_key": f"stream:{taken}"})
    async with stream_ingest(svc, applier, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
        [letter] = await eventually(lambda: _at_least(dead_letters(r, svc), 1))
    assert "reserved for Redis stream ingest" in letter[b"error"].decode()
    assert await count(svc, "u1") == 1


async def _at_least(letters: Any, n: int) -> Any:
    found = await letters
    return found if len(found) >= n else None


async def test_a_burst_of_300_entries_is_stored_in_batches(svc: Services, r: redis.Redis) -> None:
    counting = Counting(Applier(svc, "stream"))
    key = f"{svc.settings.redis_prefix}ingest"
    async with stream_ingest(svc, counting):
        async with r.pipeline(transaction=False) as pipe:
            for n in range(300):
                body = {"user_id": f"u{n % 7}", "type": "t", "title": f"n{n}"}
                pipe.xadd(key, {"payload": orjson.dumps(body)})
            await asyncio.wait_for(pipe.execute(), TIMEOUT)
        await eventually(lambda: _total(svc, 300))
        await eventually(lambda: none_pending(r, svc))
    assert max(counting.sizes) > 1
    seqs = await svc.pool.fetch(
        "SELECT user_id, array_agg(seq ORDER BY seq) AS seqs FROM user_events GROUP BY user_id"
    )
    for row in seqs:  # every user's log is still gap-free
        assert row["seqs"] == list(range(1, len(row["seqs"]) + 1))


async def _total(svc: Services, n: int) -> bool:
    return int(await svc.pool.fetchval("SELECT count(*) FROM notifications")) == n


@asynccontextmanager
async def database_down(
    svc: Services, pg_admin_dsn: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The test's database refuses connections and drops the open ones until restored.

    Yields the function that lets connections in again; it is called on exit anyway.
    """
    name = urlsplit(svc.settings.database_url or "").path.lstrip("/")
    admin = await asyncio.wait_for(
        asyncpg.connect(pg_admin_dsn, command_timeout=TIMEOUT), TIMEOUT
    )

    async def restore() -> None:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        yield restore
    finally:
        await restore()
        await admin.close()


async def test_entries_wait_while_the_database_is_down_and_are_applied_after(
    svc: Services, r: redis.Redis, pg_admin_dsn: str
) -> None:
    async with database_down(svc, pg_admin_dsn) as restore:
        applier = Applier(svc, "stream")
        counting = Counting(applier)
        async with stream_ingest(svc, counting, claim_idle_ms=30_000, on_retry=applier.retried):
            await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "waited"})
            await eventually(lambda: counting.raised >= 2)
            # The retries are visible in /metrics while they last.
            assert svc.metrics.ingest_retried._value.get() >= 2
            assert not await asyncio.wait_for(none_pending(r, svc), TIMEOUT)
            await restore()
            await eventually(lambda: none_pending(r, svc))
    assert await count(svc, "u1") == 1
    assert await asyncio.wait_for(dead_letters(r, svc), TIMEOUT) == []


async def test_stop_while_the_database_is_down_returns_after_the_grace_leaving_the_entry(
    svc: Services, r: redis.Redis, pg_admin_dsn: str
) -> None:
    async with database_down(svc, pg_admin_dsn) as restore:
        counting = Counting(Applier(svc, "stream"))
        async with stream_ingest(svc, counting, claim_idle_ms=30_000, grace=0.3) as ingest:
            await xadd(r, svc, {"user_id": "u1", "type": "t", "title": "kept"})
            await eventually(lambda: counting.raised >= 1)
            await asyncio.wait_for(ingest.stop(), TIMEOUT)  # not held up by the retries
        assert not await asyncio.wait_for(none_pending(r, svc), TIMEOUT)
        await restore()
        async with stream_ingest(svc, Applier(svc, "stream"), consumer=ingest.consumer):
            await eventually(lambda: none_pending(r, svc))  # its own pending, re-read
    assert await count(svc, "u1") == 1


async def test_ingest_takes_takeover_idle_and_stop_grace_from_settings(svc: Services) -> None:
    ingest = Ingest(svc)  # HUB_INGEST_CLAIM_IDLE_SECONDS=0.2, HUB_INGEST_STOP_GRACE_SECONDS=3
    assert ingest.stream.claim_idle_ms == 200
    assert ingest.stream.grace == ingest.publish.grace == 3
    assert ingest.publish.holder == ingest.stream.consumer  # one name per instance


async def test_a_dead_consumers_entries_are_taken_over_and_stored(
    svc: Services, r: redis.Redis
) -> None:
    key = f"{svc.settings.redis_prefix}ingest"
    await r.xgroup_create(key, GROUP, id="0", mkstream=True)
    for n in range(3):
        await xadd(r, svc, {"user_id": "u1", "type": "t", "title": f"n{n}"})
    await asyncio.wait_for(r.xreadgroup(GROUP, "dead-1", {key: ">"}, count=10), TIMEOUT)
    async with stream_ingest(svc, Applier(svc, "stream")):
        await eventually(lambda: none_pending(r, svc))
    assert await count(svc, "u1") == 3


async def test_publish_channel_stores_messages_and_goes_on_after_an_invalid_one(
    svc: Services, r: redis.Redis
) -> None:
    channel = f"{svc.settings.redis_prefix}publish"
    ingest = Ingest(svc)
    await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        await eventually(lambda: _subscribed(r, channel))
        await r.publish(channel, orjson.dumps({"user_id": "u1", "type": "t", "title": "one"}))
        await r.publish(channel, b'{"user_id": "u1"}')
        await r.publish(channel, orjson.dumps({"user_id": "u1", "type": "t", "title": "two"}))
        await eventually(lambda: _count_is(svc, "u1", 2))
        letters = await eventually(lambda: dead_letters(r, svc))
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert letters[0][b"payload"] == b'{"user_id": "u1"}'
    assert letters[0][b"source"] == b"publish"
    assert b"type: Field required" in letters[0][b"error"]
    assert svc.metrics.ingest_applied.labels(source="publish")._value.get() == 2
    assert svc.metrics.ingest_dead._value.get() == 1


async def _count_is(svc: Services, user_id: str, n: int) -> bool:
    return await count(svc, user_id) == n


async def _subscribed(r: redis.Redis, channel: str) -> bool:
    return dict(await r.pubsub_numsub(channel)).get(channel.encode(), 0) > 0


async def test_two_instances_store_each_published_message_once(
    svc: Services, r: redis.Redis
) -> None:
    channel = f"{svc.settings.redis_prefix}publish"
    instances = [Ingest(svc), Ingest(svc)]
    for ingest in instances:
        await asyncio.wait_for(ingest.start(), TIMEOUT)
    try:
        await eventually(lambda: _subscribed(r, channel))
        delivered = [
            await r.publish(channel, orjson.dumps({"user_id": "u1", "type": "t", "title": f"n{n}"}))
            for n in range(10)
        ]
        await eventually(lambda: _count_is(svc, "u1", 10))
        assert [ingest.publish.leading for ingest in instances].count(True) == 1
    finally:
        for ingest in instances:
            await asyncio.wait_for(ingest.stop(), TIMEOUT)
    assert delivered == [1] * 10  # one subscriber: the instance holding the lease
    titles = await svc.pool.fetch("SELECT title FROM notifications WHERE user_id = 'u1'")
    assert sorted(row["title"] for row in titles) == sorted(f"n{n}" for n in range(10))
    assert svc.metrics.ingest_applied.labels(source="publish")._value.get() == 10


async def test_entries_with_one_collapse_key_group_and_a_too_long_key_is_dead_lettered(
    svc: Services, r: redis.Redis
) -> None:
    applier = Applier(svc, "stream")
    like = {"user_id": "u1", "type": "like", "title": "liked", "collapse_key": "post:1"}
    await xadd(r, svc, {**like, "collapse_key": "k" * 201})
    for who in ("Ada", "Bob", "Cy"):
        await xadd(r, svc, {**like, "actor": who})
    async with stream_ingest(svc, applier, on_dead=applier.dead_lettered):
        await eventually(lambda: count(svc, "u1"))
        await eventually(lambda: none_pending(r, svc))
        [letter] = await eventually(lambda: _at_least(dead_letters(r, svc), 1))
    assert b"collapse_key" in letter[b"error"]
    rows = await svc.pool.fetch("SELECT group_count, actors FROM notifications")
    assert [(row["group_count"], row["actors"]) for row in rows] == [(3, ["Cy", "Bob", "Ada"])]


async def test_several_streams_are_each_read_and_the_same_id_in_two_is_two_entries(
    database_url: str, redis_url: str, redis_prefix: str, r: redis.Redis
) -> None:
    pool = await asyncio.wait_for(create_pool(database_url), TIMEOUT)
    settings = Settings(database_url=database_url, jwt_secret=SECRET, redis_url=redis_url,
                        redis_prefix=redis_prefix, ingest_streams=3)
    svc = Services(settings, pool, MemoryBroker())
    ingest = Ingest(svc)
    assert [s.key for s in ingest.streams] == [
        f"{redis_prefix}ingest:{{{n}}}" for n in range(3)]
    try:
        await ingest.start()
        # One id in two streams: two entries (their default keys are stream:<n>/<id>).
        for n in (0, 1):
            body = orjson.dumps({"user_id": "u1", "type": "t", "title": f"from {n}"})
            await r.xadd(f"{redis_prefix}ingest:{{{n}}}", {"payload": body}, id="1-1")
        dead_id = await r.xadd(f"{redis_prefix}ingest:{{2}}", {"payload": b"{not json"})
        await eventually(lambda: _count_is(svc, "u1", 2))
        dead = await eventually(lambda: r.xrange(f"{redis_prefix}ingest:{{2}}:dead"))
        assert [(f[b"error"], f[b"id"]) for _, f in dead] == [
            (b"the payload is not valid JSON", b"2/" + dead_id)]
        keys = await pool.fetch(
            "SELECT n.title, r.idempotency_key FROM notifications n"
            " JOIN notification_requests r ON n.id = ANY (r.notification_ids)"
            " WHERE n.user_id = 'u1' ORDER BY n.title")
        assert [(k["title"], k["idempotency_key"]) for k in keys] == [
            ("from 0", "stream:0/1-1"), ("from 1", "stream:1/1-1")]
    finally:
        await asyncio.wait_for(ingest.stop(), TIMEOUT)
        await asyncio.wait_for(pool.close(), TIMEOUT)


async def _count_is(svc: Services, user_id: str, n: int) -> bool:
    return await count(svc, user_id) == n
