"""The delivery guarantee when a hub process goes away mid-stream: SIGKILLed, or drained
by SIGTERM while it creates, streams and applies Redis ingest.

Hubs are ``notifyhub serve`` child processes (``tests.live.test_cluster.cluster``).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import redis.asyncio as aioredis

from tests.live.conftest import sse_stream, ws_connect, ws_url
from tests.live.faults import (
    add_entries,
    applied_once,
    consumer_of,
    counted,
    creating,
    follow,
    last_seq,
    no_pending,
    pending_by_consumer,
    stalled_ingest,
    titles,
)
from tests.live.test_cluster import cluster, feeds, http_client, no_tracebacks, two_hubs, until


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
                ingest = asyncio.create_task(add_entries(
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
                    assert consumer_of(a, await pending_by_consumer(redis, redis_prefix)) == 0
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
                await until(lambda: counted(database_url, "u1", "ingest-", ingest_count))
                await until(lambda: no_pending(redis, redis_prefix))
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
    async with stalled_ingest(
        tmp_path, database_url, redis_url, redis_prefix, n, ingest_stop_grace_seconds=30
    ) as (a, b, redis, lock):
        a.signal(signal.SIGTERM)
        # A stops reading and waits for the batch it is applying (stalled on the lock).
        await until(lambda: "stream-ingest: stopping; settling" in a.log())
        assert consumer_of(a, await pending_by_consumer(redis, redis_prefix)) > 0
        await lock.rollback()
        assert await a.wait(30) == 0, a.log()
        # A committed and acknowledged its batch before exiting: nothing of it is
        # left pending, and B took nothing over.
        assert consumer_of(a, await pending_by_consumer(redis, redis_prefix)) == 0
        await applied_once(database_url, redis, redis_prefix, n + 1)
    assert "took over" not in b.log()
    no_tracebacks(a, b)
