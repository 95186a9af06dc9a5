"""Runs the benchmark scenarios against a real hub process and prints a Markdown report.

The hub runs as ``python -m api.cli serve`` on a throwaway PostgreSQL (pgserver) and,
for the Redis scenario, a throwaway redis-server; clients are real WebSocket and HTTP
clients in this process. Every loop is bounded in count and time and talks only to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.servers import PostgresServer, RedisServer, free_port

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
API_KEY = "bench-api-key-0123456789"


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Hub:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def hub_process(database_url: str, redis_url: str | None) -> AsyncIterator[Hub]:
    """A ``notifyhub serve`` subprocess on a free port, stopped with SIGTERM at the end."""
    port = free_port()
    env = {
        **os.environ,
        "HUB_DATABASE_URL": database_url,
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEYS": API_KEY,
        "HUB_DB_POOL_MAX": "10",
        "HUB_OUTBOX_MAX_EVENTS": "10000",
        # The load comes from one address and one API key: measure the hub, not the limiter.
        "HUB_RATE_LIMIT_PER_SECOND": "0",
        "HUB_RATE_LIMIT_IP_PER_SECOND": "0",
        "HUB_RATE_LIMIT_WRITES_PER_SECOND": "0",
        "HUB_RATE_LIMIT_API_KEY_PER_SECOND": "0",
    }
    if redis_url:
        env["HUB_REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("hub did not start")
        yield Hub(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def token(user: str) -> str:
    from hub.settings import Settings
    from hub.tokens import Tokens

    return Tokens(Settings(jwt_secret=SECRET)).issue(user, ttl=3600)


async def open_clients(hub: Hub, users: list[str]) -> list[ClientConnection]:
    """One WebSocket per user, each past its ``hello`` frame."""
    ws_url = hub.url.replace("http", "ws")
    clients = []
    for i in range(0, len(users), 50):
        batch = users[i:i + 50]
        opened = await asyncio.gather(
            *[connect(f"{ws_url}/ws?token={token(u)}", max_size=2**20) for u in batch]
        )
        for ws in opened:
            hello = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello", hello
        clients.extend(opened)
    return clients


async def receive_created(ws: ClientConnection, count: int, stamps: list[float]) -> None:
    got = 0
    while got < count:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame["type"] == "notification.created":
            stamps.append(time.perf_counter() - frame["data"]["data"]["t0"])
            got += 1


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def scenario_rest_create(hub: Hub, total: int) -> dict[str, Any]:
    """Sequential-ish REST creates with 8 concurrent callers: throughput and latency."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": API_KEY}) as client:

        async def worker(n: int) -> None:
            for i in range(n):
                t = time.perf_counter()
                r = await client.post("/api/notifications", json={
                    "user_id": f"rest{i % 100}", "type": "bench", "title": "hello"})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*[worker(total // 8) for _ in range(8)])
        elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / elapsed),
        "p50_ms": round(pct(latencies, 0.5), 1),
        "p99_ms": round(pct(latencies, 0.99), 1),
    }


async def scenario_fanout(hub: Hub, connections: int, rounds: int) -> dict[str, Any]:
    """``connections`` users online; each round notifies all of them in one create call."""
    users = [f"fan{i}" for i in range(connections)]
    base = rss_kib(hub.proc.pid)
    clients = await open_clients(hub, users)
    with_conns = rss_kib(hub.proc.pid)
    stamps: list[float] = []
    readers = [asyncio.create_task(receive_created(ws, rounds, stamps)) for ws in clients]
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": API_KEY}) as client:
        for _ in range(rounds):
            body = {"user_ids": users, "type": "bench", "title": "fan-out",
                    "data": {"t0": time.perf_counter()}}
            (await client.post("/api/notifications", json=body, timeout=60)).raise_for_status()
    await asyncio.wait_for(asyncio.gather(*readers), timeout=120)
    elapsed = time.perf_counter() - start
    for ws in clients:
        await ws.close()
    delivered = connections * rounds
    return {
        "connections": connections,
        "events_delivered": delivered,
        "events_per_second": round(delivered / elapsed),
        "latency_p50_ms": round(pct(stamps, 0.5), 1),
        "latency_p99_ms": round(pct(stamps, 0.99), 1),
        "rss_idle_mib": round(base / 1024, 1),
        "rss_per_connection_kib": round((with_conns - base) / connections, 1),
    }


async def run(args: argparse.Namespace) -> None:
    pg = PostgresServer()
    redis = RedisServer() if args.redis else None
    try:
        dsn = pg.start()
        if redis:
            redis.start()
        async with hub_process(dsn, redis.url if redis else None) as hub:
            rest = await scenario_rest_create(hub, args.requests)
            fan = await scenario_fanout(hub, args.connections, args.rounds)
        print(f"## notifyhub benchmark ({'Redis' if redis else 'in-process'} broker)\n")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}\n")
        print("| scenario | result |\n| --- | --- |")
        for name, result in (("REST create", rest), ("fan-out", fan)):
            for key, value in result.items():
                print(f"| {name}: {key} | {value} |")
    finally:
        if redis:
            redis.close()
        pg.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis", action="store_true", help="use a Redis broker")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
