"""A client that never reads: the hub closes it as slow (4008) and its memory stays
bounded by the outbox, not by what is published to the user.

The hub is a ``notifyhub serve`` child process, so its memory can be measured.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson
import redis.asyncio as aioredis

from pubsub.session import wire
from tests.live.conftest import closed_code, recv, ws_connect, ws_url
from tests.live.test_cluster import Feed, cluster, feeds, http_client, no_tracebacks, until


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """The value of the unlabelled metric ``name`` on ``/metrics`` (0 when absent)."""
    text = (await http.get("/metrics")).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


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
