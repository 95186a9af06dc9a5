"""A publisher process: offers unicast notifications at a fixed rate for a bounded time.

``python -m bench.publish --mode stream|rest|peer --rate R --seconds S --users N --tag T``
sends ``R`` per second (open loop, paced every 5 ms, from wall-clock ``--start-at``) to
random users ``u0..u{N-1}``, each stamped ``data = {"t0": time.time(), "tag": T}``, and
prints one JSON line ``{"published", "errors", "skipped", "seconds", "start"}``.
``stream`` XADDs ``{prefix}ingest``, ``rest`` POSTs ``/api/notifications`` with the API
key over ``bench.http`` keep-alive connections (at most ``--max-in-flight``, 64, one
request per connection; sends beyond that are skipped, not queued), ``peer`` emits
through ``AsyncRedisManager``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvloop

from bench.http import Connection, HTTPError
from bench.peer import EVENT, publisher
from bench.report import print_line
from bench.servers import PREFIX


def body(user: str, tag: str) -> dict[str, Any]:
    """A notification create for ``user`` carrying the send time and the step tag."""
    return {"user_id": user, "type": "bench", "title": "bench",
            "data": {"t0": time.time(), "tag": tag}}


class Sender:
    """Sends a batch of unicast notifications and counts the outcomes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.published = self.errors = self.skipped = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.redis = aioredis.Redis.from_url(args.redis)
        # Idle keep-alive connections; at most ``max_in_flight`` exist, each busy or idle.
        self.idle: list[Connection] = []
        self.opened = 0
        self.peer = publisher(args.redis)
        modes: dict[str, Callable[[list[str]], Awaitable[None]]] = {
            "stream": self.stream, "rest": self.rest, "peer": self.emit}
        self.send = modes[args.mode]

    async def stream(self, users: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.xadd(f"{PREFIX}ingest", {"payload": orjson.dumps(body(user, self.args.tag))})
        try:
            await pipe.execute()
            self.published += len(users)
        except Exception:
            self.errors += len(users)

    async def post(self, conn: Connection, user: str) -> None:
        try:
            status, _ = await conn.post("/api/notifications", body(user, self.args.tag))
            if status == 201:
                self.published += 1
            else:
                self.errors += 1
        except HTTPError:
            self.errors += 1
        finally:
            self.idle.append(conn)

    async def rest(self, users: list[str]) -> None:
        for user in users:
            if self.idle:
                conn = self.idle.pop()
            elif self.opened < self.args.max_in_flight:
                conn, self.opened = Connection(self.args.url), self.opened + 1
            else:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.post(conn, user))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def emit(self, users: list[str]) -> None:
        async def one(user: str) -> None:
            await self.peer.emit(EVENT, {"t0": time.time(), "tag": self.args.tag}, room=user)

        for i in range(0, len(users), 50):
            chunk = users[i:i + 50]
            results = await asyncio.gather(*[one(u) for u in chunk], return_exceptions=True)
            failed = sum(isinstance(r, BaseException) for r in results)
            self.errors += failed
            self.published += len(chunk) - failed

    async def close(self) -> None:
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=30)
        for conn in self.idle:
            conn.close()
        await self.redis.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sender = Sender(args)
    rng = random.Random(args.seed)
    total = int(args.rate * args.seconds)
    sent = 0
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    start = time.time()
    while sent < total and time.time() < start + args.seconds + 5:
        due = min(total, int((time.time() - start) * args.rate) + 1) - sent
        if due > 0:
            batch = [f"u{rng.randrange(args.users)}" for _ in range(min(due, 2000))]
            sent += len(batch)
            await sender.send(batch)
        await asyncio.sleep(0.005)
    sender.skipped += total - sent
    elapsed = time.time() - start
    await sender.close()
    return {"published": sender.published, "errors": sender.errors,
            "skipped": sender.skipped, "seconds": round(elapsed, 3), "start": start}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish")
    parser.add_argument("--mode", choices=["stream", "rest", "peer"], required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="REST: connections, each with at most one request in flight")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (time.time()) to start at")
    print_line(uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
