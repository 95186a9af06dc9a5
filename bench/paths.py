"""``python -m bench.paths``: the CPU and time of the hub's two hot paths, alone.

Prints one ``PATHS {json}`` line.

``create``: ``hub.notifications.create_many_in`` in a loop, one transaction per batch
(the way a batch with collapse keys or inline contacts is written; most batches are
written in one statement without a transaction, docs/api.md, which this path does not
time, so that it runs unchanged on older trees), on a throwaway PostgreSQL (pgserver,
commits flushed as in production), with no HTTP,
no Redis and no clients: the wall time and the process's CPU per batch, median and
p99, for batches of one create to one user (with an idempotency key, as ingest makes
them) and of one create to ``--recipients`` users (a bulk create).

``send``: ``hub.messages.send_many_in`` in a loop, one transaction per direct message
(with a ``client_id``, as chat clients send them; its ``new_message`` notification
included), on a throwaway PostgreSQL as ``create``: wall time and CPU per send. With
``--writer``, ``hub.messages.send`` instead, as the hub runs it: through its group
commit (a batch of one each time, written the way that tree writes it: after release
0.3.0 without a transaction), then published to an in-memory broker.

``subscribe``: a ``RedisBroker`` subscribed to one channel of a throwaway Redis while
another process publishes ``--messages`` messages to it (pipelined, 100 at a time):
the broker process's CPU per message received (reading, parsing, unwiring, handing
to ``on_message``).

To compare two source trees (``git archive`` copies, as ``make bench --hub-src`` takes),
run it from inside each, ``cd <tree> && PYTHONPATH=<tree> python -m bench.paths ...``
(copying this file into a tree older than it), alternated, back to back
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from db.migrate import migrate
from db.pool import create_pool
from hub import messages
from hub.messages import Send
from hub.models import MessageSend, NotificationCreate
from hub.notifications import create_many_in
from hub.services import Services
from hub.settings import Settings
from pubsub.memory import MemoryBroker
from pubsub.redis import RedisBroker
from tests.servers import PostgresServer, RedisServer

#: The publisher of ``subscribe``, in a process of its own: pipelined PUBLISHes.
PUBLISHER = """
import sys, redis
client, n = redis.Redis.from_url(sys.argv[1]), int(sys.argv[2])
frame = b'7\\n{"type":"notification.created","seq":7,"data":{"id":1,"title":"hello"}}'
for start in range(0, n, 100):
    pipe = client.pipeline(transaction=False)
    for _ in range(min(100, n - start)):
        pipe.publish("path:user:u1", frame)
    pipe.execute()
"""


J = TypeVar("J")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 3),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)}


async def timed(
    pool: Any, count: int, make: Callable[[int], J], run: Callable[[Any, J], Awaitable[Any]],
    *, transaction: bool = True,
) -> dict[str, Any]:
    """The wall time and the process's CPU of ``run(conn, make(n))``, each in a
    transaction of its own (or none: ``run`` makes its own), ``count`` times after 20
    that warm up (plans, types, caches): ``{"wall_ms", "cpu_us"}``, median and p99."""
    walls, cpus = [], []
    for n in range(count + 20):
        job = make(n)
        wall, cpu = time.perf_counter(), time.process_time()
        async with pool.acquire() as conn:
            if transaction:
                async with conn.transaction():
                    await run(conn, job)
            else:
                await run(conn, job)
        if n >= 20:
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1e6)
    return {"wall_ms": summary(walls), "cpu_us": summary(cpus)}


async def create(dsn: str, batches: int, recipients: int) -> dict[str, Any]:
    pool = await create_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        out: dict[str, Any] = {}
        for label, count, users in (("one", batches, 1), ("bulk", max(5, batches // 100),
                                                          recipients)):
            def request(n: int, label: str = label, users: int = users) -> NotificationCreate:
                return NotificationCreate(
                    user_ids=[f"u{(n * users + i) % 2000}" for i in range(users)]
                    if users > 1 else None,
                    user_id=f"u{n % 2000}" if users == 1 else None,
                    type="bench", title="path", data={"n": n, "t0": time.time()},
                    idempotency_key=f"path:{os.getpid()}:{label}:{n}" if users == 1 else None,
                )

            out[label] = {"recipients": users, "batches": count, **await timed(
                pool, count, request, lambda conn, job: create_many_in(conn, [job]))}
        out["stored"] = await pool.fetchval("SELECT count(*) FROM notifications")
        return out
    finally:
        await pool.close()


async def send(dsn: str, sends: int, writer: bool, data_dir: str) -> dict[str, Any]:
    pool = await create_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)

        def message(n: int) -> Send:
            return (f"a{n % 50}", MessageSend(recipient_id=f"b{n % 50}", body=f"hello {n}",
                                              client_id=f"path:{os.getpid()}:{n}"))

        if writer:  # the public send: its group commit, then an in-memory publish
            broker = MemoryBroker()
            await broker.start(lambda *_: None, _nothing)
            svc = Services(Settings(database_url=dsn, data_dir=Path(data_dir)), pool, broker)
            try:
                timing = await timed(pool, sends, message,
                                     lambda _, job: messages.send(svc, *job),
                                     transaction=False)
            finally:
                await broker.stop()
        else:
            timing = await timed(pool, sends, message,
                                 lambda conn, job: messages.send_many_in(conn, [job]))
        return {"sends": sends, "writer": writer, **timing,
                "stored": await pool.fetchval("SELECT count(*) FROM direct_messages")}
    finally:
        await pool.close()


async def _nothing() -> None:
    return None


async def subscribe(url: str, messages: int) -> dict[str, Any]:
    got, done, started = 0, asyncio.Event(), [0.0]

    def on_message(channel: str, seq: int | None, message: bytes) -> None:
        nonlocal got
        got += 1
        if got == 1:
            started[0] = time.process_time()
        if got == messages:
            done.set()

    broker = RedisBroker(url, "path:")
    await broker.start(on_message, _nothing)
    try:
        await broker.subscribe("user:u1")
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, url, str(messages),
            stdout=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(done.wait(), 120)
        cpu = time.process_time() - started[0]
        await publisher.wait()
        return {"messages": messages, "received": got,
                "cpu_us_per_message": round(cpu / messages * 1e6, 2)}
    finally:
        await broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.paths", description=__doc__)
    p.add_argument("path", choices=("create", "send", "subscribe"))
    p.add_argument("--batches", type=int, default=2000, help="one-create batches (2000)")
    p.add_argument("--recipients", type=int, default=1000, help="users of the bulk (1000)")
    p.add_argument("--messages", type=int, default=100_000, help="published (100000)")
    p.add_argument("--sends", type=int, default=2000, help="direct messages sent (2000)")
    p.add_argument("--writer", action="store_true",
                   help="send: time hub.messages.send through its group commit")
    args = p.parse_args()
    if args.path in ("create", "send"):
        pg = PostgresServer()
        data_dir = tempfile.TemporaryDirectory()  # the settings' data_dir of --writer
        try:
            result = asyncio.run(
                create(pg.start(), args.batches, args.recipients) if args.path == "create"
                else send(pg.start(), args.sends, args.writer, data_dir.name))
        finally:
            pg.close()
            data_dir.cleanup()
    else:
        redis = RedisServer()
        redis.start()
        try:
            result = asyncio.run(subscribe(redis.url, args.messages))
        finally:
            redis.close()
    print("PATHS " + json.dumps({"path": args.path, **result}))


if __name__ == "__main__":
    main()
