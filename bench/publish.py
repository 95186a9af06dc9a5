"""A publisher process: offers unicast notifications at a fixed rate for a bounded time.

``python -m bench.publish --mode stream|rest|peer --rate R --seconds S --users N --tag T``
sends ``R`` per second (open loop, paced every 5 ms) to random users ``u0..u{N-1}``,
each stamped ``data = {"t0": time.time(), "tag": T}``, and prints one JSON line
``{"published", "errors", "skipped", "seconds"}``. ``stream`` XADDs ``{prefix}ingest``,
``rest`` POSTs ``/api/notifications`` with the API key (at most 64 in flight, one per
connection; sends beyond that are skipped, not queued), ``peer`` emits through
``AsyncRedisManager``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from bench.peer import EVENT, publisher
from bench.servers import API_KEY, PREFIX

MAX_IN_FLIGHT = 64


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
        self.http = httpx.AsyncClient(
            base_url=args.url, headers={"X-API-Key": API_KEY}, timeout=30,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
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

    async def post(self, user: str) -> None:
        try:
            response = await self.http.post("/api/notifications", json=body(user, self.args.tag))
            if response.status_code == 201:
                self.published += 1
            else:
                self.errors += 1
        except httpx.HTTPError:
            self.errors += 1

    async def rest(self, users: list[str]) -> None:
        for user in users:
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.post(user))
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
        await self.http.aclose()
        await self.redis.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sender = Sender(args)
    rng = random.Random(args.seed)
    total = int(args.rate * args.seconds)
    sent = 0
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
    print(orjson.dumps(asyncio.run(run(parser.parse_args()))).decode(), flush=True)


if __name__ == "__main__":
    main()
