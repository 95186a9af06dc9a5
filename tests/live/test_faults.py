"""The delivery guarantee through faults: Redis killed and restarted, a hub SIGKILLed or
drained mid-stream, ingest taken over from a dead instance, a client that never reads.

Hubs are ``notifyhub serve`` child processes (``tests.live.test_cluster.cluster``). Tests
that kill Redis run their own ``RedisServer`` (AOF on); the session's is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from pubsub.redis import wire
from tests.live.conftest import (
    SSE,
    HubProcess,
    closed_code,
    recv,
    sse_stream,
    ws_connect,
    ws_url,
)
from tests.live.test_cluster import (
    Feed,
    cluster,
    feeds,
    greeted,
    http_client,
    no_tracebacks,
    notify,
    quiet,
    two_hubs,
    until,
)
from tests.servers import RedisServer

#: HUB_INGEST_CLAIM_IDLE_SECONDS of hubs in tests that wait for a takeover (default 30).
SHORT_CLAIM = {"ingest_claim_idle_seconds": 1}


class Creator:
    """Creates notifications for ``user`` in the background, one at a time per client.

    ``created`` are the titles that got a 201. A client in ``fragile`` may fail once its
    instance goes away (it then stops); any failure of another client fails the test.
    """

    def __init__(
        self, clients: list[httpx.AsyncClient], user: str,
        fragile: httpx.AsyncClient | None = None,
    ) -> None:
        self.user, self.created, self._stop = user, [], asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._run(http, f"w{n}-", http is fragile))
            for n, http in enumerate(clients)
        ]

    async def _run(self, http: httpx.AsyncClient, name: str, fragile: bool) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                await notify(http, self.user, f"{name}{i}")
            except (httpx.HTTPError, AssertionError):
                if fragile:
                    return
                raise
            self.created.append(f"{name}{i}")
            i += 1
            await asyncio.sleep(0.01)

    async def reach(self, count: int, timeout: float = 20) -> None:
        """Wait until ``count`` creates succeeded; raises what a creator failed with."""
        def check() -> bool:
            for task in self.tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            return len(self.created) >= count

        await until(check, timeout)

    async def more(self, n: int, timeout: float = 20) -> None:
        await self.reach(len(self.created) + n, timeout)

    async def stop(self) -> list[str]:
        """Stop creating; the titles created."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 20)
        return self.created


@contextlib.asynccontextmanager
async def creating(*args: Any, **kwargs: Any) -> AsyncIterator[Creator]:
    creator = Creator(*args, **kwargs)
    try:
        yield creator
    finally:
        for task in creator.tasks:
            task.cancel()
        await asyncio.wait(creator.tasks)


async def broker_state(http: httpx.AsyncClient) -> str:
    """What ``/ready`` says about the broker: ``ok`` or ``down``."""
    response = await http.get("/ready")
    state: str = response.json()["broker"]
    assert response.status_code == (200 if state == "ok" else 503), response.text
    return state


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """The value of the unlabelled metric ``name`` on ``/metrics`` (0 when absent)."""
    text = (await http.get("/metrics")).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def last_seq(database_url: str, user: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval("SELECT last_seq FROM user_counters WHERE user_id = $1", user)
    finally:
        await conn.close()
    return int(value or 0)


def titles(feed: Feed) -> list[str]:
    return [f["data"]["title"] for f in feed.frames if f["type"] == "notification.created"]


async def follow(running: list[Feed], ws: ClientConnection, sse: SSE) -> list[Feed]:
    """Feeds of a WebSocket and an SSE stream after their hello, added to ``running``."""
    await greeted(ws, sse)
    both = [Feed.of_ws(ws), Feed.of_sse(sse)]
    running += both
    return both


# ---- Redis restarts ------------------------------------------------------------------


async def test_events_created_while_redis_is_down_reach_every_client_once_after_restart(
    tmp_path: Path, database_url: str
) -> None:
    server = RedisServer()
    try:
        await asyncio.to_thread(server.start)
        async with (
            two_hubs(tmp_path, database_url, server.url, "hub:") as (a, b, http_a, http_b),
            ws_connect(ws_url(b.url, "u1")) as ws,
            sse_stream(a.url, "u1") as sse,
            ws_connect(ws_url(b.url, "u2")) as ws_u2,
            feeds() as running,
        ):
            await greeted(ws, ws_u2, sse)
            running += [Feed.of_ws(ws), Feed.of_sse(sse), Feed.of_ws(ws_u2)]
            u1_feeds, u2 = running[:2], running[2]
            async with creating([http_a, http_b], "u1") as creator:
                await creator.reach(5)
                await asyncio.to_thread(server.kill)
                await until(lambda: _broker_everywhere("down", http_a, http_b))
                await creator.more(10)  # creates go on: events are durable in PostgreSQL
                # u2 (connected before) and u3 (connecting now) get events only while
                # Redis is down: nothing but the catch-up after the broker reconnects
                # (Node.on_reconnect) can deliver them.
                async with ws_connect(ws_url(a.url, "u3")) as ws_u3:
                    assert (await recv(ws_u3))["type"] == "hello"
                    u3 = Feed.of_ws(ws_u3)
                    running.append(u3)
                    for i in range(3):
                        await notify(http_a, ["u2", "u3"], f"down {i}")
                    await asyncio.to_thread(server.start)
                    await until(lambda: _broker_everywhere("ok", http_a, http_b))
                    assert await u3.reach(3) == [1, 2, 3]
                    await u3.quiet(ws_u3)
                assert await u2.reach(3) == [1, 2, 3]
                await u2.quiet(ws_u2)
                await creator.more(5)
                created = await creator.stop()
            total = len(created)
            for feed in u1_feeds:  # connected throughout: every event once, in order
                assert await feed.reach(total) == list(range(1, total + 1))
                assert sorted(titles(feed)) == sorted(created)
            # Stream ingest is back too: an entry added now reaches the clients.
            async with aioredis.Redis.from_url(server.url) as redis:
                await _add_entries(redis, "hub:", "u1", 1)
            for feed in u1_feeds:
                assert await feed.reach(total + 1) == list(range(1, total + 2))
            await u1_feeds[0].quiet(ws)

            # A client that was away across the restart resumes with everything once.
            async with ws_connect(ws_url(a.url, "u1", since=2)) as late:
                assert (await recv(late))["data"]["last_seq"] == total + 1
                assert [(await recv(late))["seq"] for _ in range(total - 1)] == list(
                    range(3, total + 2)
                )
                await notify(http_b, "u1", "after")
                assert (await recv(late))["seq"] == total + 2
                await quiet(late)
        no_tracebacks(a, b)
    finally:
        await asyncio.to_thread(server.close)


async def _broker_everywhere(state: str, *clients: httpx.AsyncClient) -> bool:
    return all([await broker_state(http) == state for http in clients])


# ---- a hub process dies --------------------------------------------------------------


async def test_a_client_of_a_killed_instance_resumes_on_the_other_without_loss(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                redis_prefix=redis_prefix) as (a, b),
        http_client(b) as http_b,
        creating([http_b], "u1") as creator,
        feeds() as running,
    ):
        # since=0: the creator may have been quicker than the connect.
        async with (
            ws_connect(ws_url(a.url, "u1", since=0)) as ws,
            sse_stream(a.url, "u1", since=0) as sse,
        ):
            old = await follow(running, ws, sse)
            await until(lambda: all(len(feed.seqs) >= 5 for feed in old))
            await a.kill()  # SIGKILL: no close frame, no end of stream
            for feed in old:
                await feed.end()
        await creator.more(5)  # created while the clients are away
        ws_since, sse_since = (str(feed.seqs[-1]) for feed in old)
        async with (
            ws_connect(ws_url(b.url, "u1", since=ws_since)) as ws,
            sse_stream(b.url, "u1", headers={"Last-Event-ID": sse_since}) as sse,
        ):
            new = await follow(running, ws, sse)
            await creator.more(5)
            created = await creator.stop()
            total = len(created)
            for before, after in zip(old, new, strict=True):
                await after.reach(total)
                assert before.seqs + after.seqs == list(range(1, total + 1))
                assert sorted(titles(before) + titles(after)) == sorted(created)
            await new[0].quiet(ws)
    no_tracebacks(b)


async def test_sigterm_mid_stream_drains_and_nothing_committed_is_lost(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    ingest_count = 40
    async with (
        # The default takeover idle (30 s): an entry A left unacknowledged would stay
        # pending long after A is gone, not be quietly finished by B.
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        creating([http_a, http_b], "u1", fragile=http_a) as creator,
        feeds() as running,
    ):
        redis = aioredis.Redis.from_url(redis_url)
        try:
            # since=0: the creator may have been quicker than the connect.
            async with (
                ws_connect(ws_url(a.url, "u1", since=0)) as ws,
                sse_stream(a.url, "u1", since=0) as sse,
            ):
                old = await follow(running, ws, sse)
                await until(lambda: all(len(feed.seqs) >= 5 for feed in old))
                # Backend entries arrive while A drains; A may hold some when it stops,
                # and then settles them before it exits.
                ingest = asyncio.create_task(_add_entries(
                    redis, redis_prefix, "u1", ingest_count, pause=0.005
                ))
                try:
                    a.signal(signal.SIGTERM)
                    for feed in old:
                        await feed.end()
                    assert ws.close_code == 1001
                    assert await a.wait(10) == 0, a.log()  # killed if it takes longer
                    # Whatever A's ingest had read, it acknowledged: nothing is left
                    # pending for a takeover.
                    assert _consumer_of(a, await _pending(redis, redis_prefix)) == 0
                    await asyncio.wait_for(ingest, 20)
                finally:
                    ingest.cancel()
                    await asyncio.wait({ingest})
            await creator.more(5)  # through B, while the clients are away
            since = [str(feed.seqs[-1]) for feed in old]
            async with (
                ws_connect(ws_url(b.url, "u1", since=since[0])) as ws,
                sse_stream(b.url, "u1", headers={"Last-Event-ID": since[1]}) as sse,
            ):
                new = await follow(running, ws, sse)
                created = await creator.stop()
                # Every ingest entry is applied exactly once, by A or by B.
                await until(lambda: _counted(database_url, "u1", "ingest-", ingest_count))
                await until(lambda: _no_pending(redis, redis_prefix))
                total = await last_seq(database_url, "u1")
                for before, after in zip(old, new, strict=True):
                    await after.reach(total)
                    assert before.seqs + after.seqs == list(range(1, total + 1))
                    got = titles(before) + titles(after)
                    assert len(got) == len(set(got)) == total
                    assert set(created) <= set(got)  # every 201, and through A maybe more
                await new[0].quiet(ws)
        finally:
            await redis.aclose()
    assert "Traceback" not in a.log(), a.log()
    no_tracebacks(b)
    assert "took over" not in b.log()  # B never had to finish A's work


async def test_sigterm_lets_an_instance_settle_the_ingest_batch_it_is_applying(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 20
    # Default takeover idle (30 s), so B cannot take A's batch during the test; a long
    # grace, so A's stop waits for the lock however slow the machine is.
    async with _stalled_ingest(
        tmp_path, database_url, redis_url, redis_prefix, n, ingest_stop_grace_seconds=30
    ) as (a, b, redis, lock):
        a.signal(signal.SIGTERM)
        # A stops reading and waits for the batch it is applying (stalled on the lock).
        await until(lambda: "stream-ingest: stopping; settling" in a.log())
        assert _consumer_of(a, await _pending(redis, redis_prefix)) > 0
        await lock.rollback()
        assert await a.wait(30) == 0, a.log()
        # A committed and acknowledged its batch before exiting: nothing of it is
        # left pending, and B took nothing over.
        assert _consumer_of(a, await _pending(redis, redis_prefix)) == 0
        await _applied_once(database_url, redis, redis_prefix, n + 1)
    assert "took over" not in b.log()
    no_tracebacks(a, b)


# ---- ingest across processes ---------------------------------------------------------


async def _add_entries(
    redis: aioredis.Redis, prefix: str, user: str, n: int, pause: float = 0.0, first: int = 0
) -> None:
    """XADD ``n`` entries for ``user`` titled ``ingest-<i>`` (no idempotency key)."""
    for i in range(first, first + n):
        payload = orjson.dumps({"user_id": user, "type": "t", "title": f"ingest-{i}"})
        await redis.xadd(f"{prefix}ingest", {"payload": payload})
        if pause:
            await asyncio.sleep(pause)


async def _count(database_url: str, user: str, prefix: str) -> int:
    """Notifications of ``user`` with a title starting with ``prefix``; duplicates fail."""
    conn = await asyncpg.connect(database_url)
    try:
        count, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT title) FROM notifications"
            " WHERE user_id = $1 AND starts_with(title, $2)", user, prefix,
        )
    finally:
        await conn.close()
    assert count == distinct, f"{count - distinct} entries were applied twice"
    return int(count)


async def _counted(database_url: str, user: str, prefix: str, n: int) -> bool:
    return await _count(database_url, user, prefix) == n


async def _pending(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Entries delivered but not acknowledged, by consumer name."""
    summary = await redis.xpending(f"{prefix}ingest", "notifyhub")
    return {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
        for c in summary["consumers"]
    }


def _consumer_of(hub: HubProcess, pending: dict[str, int]) -> int:
    assert hub.proc is not None
    return sum(n for name, n in pending.items() if f"-{hub.proc.pid}-" in name)


async def _applied_once(database_url: str, redis: aioredis.Redis, prefix: str, n: int) -> None:
    """Wait until ``n`` entries for u1 are applied and none is pending: each applied once."""
    await until(lambda: _counted(database_url, "u1", "ingest-", n))
    await until(lambda: _no_pending(redis, prefix))
    assert await _count(database_url, "u1", "ingest-") == n


async def test_ingest_entries_are_applied_once_with_two_instances_consuming(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 200
    async with aioredis.Redis.from_url(redis_url) as redis:
        async with cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                           redis_prefix=redis_prefix) as (a, b):
            await _add_entries(redis, redis_prefix, "u1", n)
            await _applied_once(database_url, redis, redis_prefix, n)
            groups = await redis.xinfo_consumers(f"{redis_prefix}ingest", "notifyhub")
            assert len(groups) == 2  # both instances consume the one group
        no_tracebacks(a, b)


async def _no_pending(redis: aioredis.Redis, prefix: str) -> bool:
    return sum((await _pending(redis, prefix)).values()) == 0


async def test_entries_held_by_a_killed_instance_are_taken_over_and_applied_once(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 100
    async with _stalled_ingest(
        tmp_path, database_url, redis_url, redis_prefix, n, **SHORT_CLAIM
    ) as (a, b, redis, lock):
        await a.kill()  # its transaction rolls back; its entries stay pending in Redis
        await lock.rollback()
        await _applied_once(database_url, redis, redis_prefix, n + 1)
        assert "took over" in b.log()
    no_tracebacks(b)


async def test_entries_a_killed_instance_applied_but_never_acked_are_not_applied_again(
    tmp_path: Path, database_url: str
) -> None:
    n = 20
    server = RedisServer()  # its own: writes are paused on it
    try:
        await asyncio.to_thread(server.start)
        async with _stalled_ingest(
            tmp_path, database_url, server.url, "hub:", n, **SHORT_CLAIM
        ) as (a, b, redis, lock):
            held = sum((await _pending(redis, "hub:")).values())
            # Acknowledging is a write: with writes paused, both instances commit
            # what they hold and then wait to acknowledge it.
            await redis.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            try:
                await lock.rollback()
                await until(lambda: _counted(database_url, "u1", "ingest-", 1 + held))
                await a.kill()  # applied, never acknowledged
            finally:
                await redis.execute_command("CLIENT", "UNPAUSE")
            # B takes A's entries over; their idempotency keys make them no-ops.
            await _applied_once(database_url, redis, "hub:", n + 1)
            assert "took over" in b.log()
        no_tracebacks(b)
    finally:
        await asyncio.to_thread(server.close)


@contextlib.asynccontextmanager
async def _stalled_ingest(
    tmp_path: Path, database_url: str, redis_url: str, prefix: str, n: int, **settings: Any
) -> AsyncIterator[tuple[HubProcess, HubProcess, aioredis.Redis, Any]]:
    """Two hubs on ``settings`` that both hold delivered, unacknowledged entries of ``n``
    just added for u1.

    Holding u1's counter row lock stalls every apply mid-transaction (after one entry
    created the row). Yields the hubs, a Redis client and the lock's transaction;
    rolling it back lets them go on.
    """
    async with (
        aioredis.Redis.from_url(redis_url) as redis,
        cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                redis_prefix=prefix, **settings) as (a, b),
    ):
        await _add_entries(redis, prefix, "u1", 1)
        await until(lambda: _counted(database_url, "u1", "ingest-", 1))
        blocker = await asyncpg.connect(database_url)
        try:
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("SELECT 1 FROM user_counters WHERE user_id = 'u1' FOR UPDATE")
            await _add_entries(redis, prefix, "u1", n, first=1)
            await until(lambda: _both_hold(redis, prefix, a, b))
            yield a, b, redis, lock
        finally:
            await blocker.close()


async def _both_hold(redis: aioredis.Redis, prefix: str, a: HubProcess, b: HubProcess) -> bool:
    pending = await _pending(redis, prefix)
    return _consumer_of(a, pending) > 0 and _consumer_of(b, pending) > 0


# ---- a client that never reads -------------------------------------------------------


def _memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of process ``pid``, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


async def test_a_client_that_never_reads_is_closed_and_hub_memory_stays_bounded(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    frame_bytes, frames, batch = 32 * 1024, 2000, 20  # 64 MB to a user with a stuck client
    mib = 1024 * 1024
    redis = aioredis.Redis.from_url(redis_url)
    channel = f"{redis_prefix}user:u1"
    frame = orjson.dumps({"type": "typing", "seq": None, "data": {"pad": "x" * frame_bytes}})

    async def publish(count: int) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(count):
                pipe.publish(channel, wire(None, frame))
            await pipe.execute()

    try:
        async with (
            cluster(tmp_path, 1, database_url=database_url, redis_url=redis_url,
                    redis_prefix=redis_prefix) as (hub,),
            http_client(hub) as http,
            ws_connect(ws_url(hub.url, "u1"), max_size=None) as reader,
            feeds() as running,
        ):
            assert hub.proc is not None
            assert (await recv(reader))["type"] == "hello"
            feed = Feed.of_ws(reader)
            running.append(feed)
            # Lock-step with a client that reads: it never falls behind, the hub keeps
            # the channel subscribed, and every frame goes through fan-out.
            for n in range(1, 6):
                await publish(batch)
                await until(lambda n=n: len(feed.frames) >= n * batch)
            baseline = _memory(hub.proc.pid)["VmRSS"]
            # max_queue=1: the client library stops reading the socket after one frame.
            async with ws_connect(ws_url(hub.url, "u1"), max_queue=1) as stuck:
                assert (await recv(stuck))["type"] == "hello"

                async def closed_when_slow() -> int | None:
                    await until(lambda: _slow_disconnects(http), 60)
                    return await closed_code(stuck, 30)  # reads its backlog, then the close

                code = asyncio.create_task(closed_when_slow())
                try:
                    seen = len(feed.frames)
                    for n in range(1, frames // batch + 1):
                        await publish(batch)
                        await until(lambda n=n: len(feed.frames) >= seen + n * batch)
                    # The stuck client's backlog is bounded by its outbox (4 MiB by
                    # default), not by what was published to its user (64 MB).
                    growth = _memory(hub.proc.pid)["VmHWM"] - baseline
                    assert growth < 32 * mib, f"peak RSS grew by {growth / mib:.0f} MiB"
                    assert await asyncio.wait_for(code, 30) == 4008
                finally:
                    code.cancel()
                    await asyncio.wait({code})
            assert await metric(http, "notifyhub_slow_client_disconnects_total") == 1
            await feed.quiet(reader)
        no_tracebacks(hub)
    finally:
        await redis.aclose()


async def _slow_disconnects(http: httpx.AsyncClient) -> bool:
    return await metric(http, "notifyhub_slow_client_disconnects_total") > 0
