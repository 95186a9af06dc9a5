"""``python -m bench.durablefloor [N]``: the latency of each durable step, alone.

Starts the benchmark's own PostgreSQL (pgserver, default settings, ``synchronous_commit``
on) and Redis (``appendfsync always``), and times N of each step one after another on
an otherwise idle stack, from one client, printing p50 / p99 / max in milliseconds:

- ``pg commit``: a transaction inserting one small row, committed (its WAL flush, one
  ``fdatasync`` of this disk): what every create, direct message and mark-read waits
  for once, however its batch is made;
- ``pg select``: one round trip that writes nothing (the statement floor);
- ``redis xadd``: one ``XADD`` to a stream, which Redis fsyncs before it answers: what a
  publisher using the ingest stream waits for;
- ``redis publish``: one ``PUBLISH`` (nothing written): what the live fan-out costs.

A stream-ingested notification pays at least an XADD and a commit in sequence before
its frame can leave, a direct message a commit per leg; the sums below are the floor
under the p99 goals of docs/benchmarks.md on this machine, before any Python runs.
The table is followed by one ``FLOOR {json}`` line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg
from redis.asyncio import Redis

from tests.servers import PostgresServer, RedisServer


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of ``samples`` (milliseconds)."""
    ordered = sorted(samples)
    return (statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            ordered[-1])


async def timed(n: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    """Milliseconds of each of ``n`` runs of ``step``, one after another."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        await step(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def measure(dsn: str, redis_url: str, n: int) -> dict[str, list[float]]:
    conn = await asyncpg.connect(dsn)
    redis = Redis.from_url(redis_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS floor_probe (id bigint, at timestamptz)")

        async def commit(i: int) -> None:
            async with conn.transaction():
                await conn.execute("INSERT INTO floor_probe VALUES ($1, now())", i)

        async def select(i: int) -> None:
            await conn.fetchval("SELECT $1::bigint", i)

        async def xadd(i: int) -> None:
            await redis.xadd("floor:stream", {"payload": b"x" * 200}, maxlen=10_000)

        async def publish(i: int) -> None:
            await redis.publish("floor:channel", b"x" * 200)

        steps = {"pg commit": commit, "pg select": select, "redis xadd": xadd,
                 "redis publish": publish}
        for step in steps.values():  # warm up: connections, plans, files
            await timed(50, step)
        return {name: await timed(n, step) for name, step in steps.items()}
    finally:
        await conn.close()
        await redis.aclose()


def main(n: int) -> None:
    pg, redis = PostgresServer(), RedisServer()
    dsn = pg.start()
    redis.start()
    try:
        results = asyncio.run(measure(dsn, redis.url, n))
    finally:
        redis.close()
        pg.close()
    print(f"{n} of each, one after another; milliseconds p50 / p99 / max")
    rows = {name: quantiles(samples) for name, samples in results.items()}
    for name, (p50, p99, top) in rows.items():
        print(f"  {name:14} {p50:7.2f} {p99:7.2f} {top:8.2f}")
    ingest = [a + b for a, b in zip(results["redis xadd"], results["pg commit"], strict=True)]
    p50, p99, top = quantiles(ingest)
    print(f"  {'xadd + commit':14} {p50:7.2f} {p99:7.2f} {top:8.2f}"
          "   (pairs summed in order: the durable steps of one ingested notification)")
    rows["xadd + commit"] = (p50, p99, top)
    print("FLOOR " + json.dumps({name: dict(zip(("p50_ms", "p99_ms", "max_ms"),
                                                 (round(v, 3) for v in values), strict=True))
                                 for name, values in rows.items()} | {"n": n}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
