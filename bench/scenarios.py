"""The benchmark scenarios; each returns result rows (see ``bench.report``).

Load comes from child processes (``bench.clients``, ``bench.publish``, ``bench.rest``,
``bench.dm``; REST load from ``rest_processes`` of them at once, results merged); this
process only orchestrates, polls and reads /proc. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.http import Connection
from bench.peer import BROADCAST, publisher
from bench.pool import Pool
from bench.report import cpu_per_frame, latency, row
from bench.servers import Stack

Row = dict[str, Any]

# Open-loop REST: connections (each with at most one request in flight) over all loaders.
MAX_IN_FLIGHT = 64
# Loader processes start together this long after they are spawned (imports take time).
START_DELAY = 1.5


@dataclass
class Options:
    users: int = 2000
    processes: int = 2
    rest_processes: int = 2
    seconds: float = 10.0
    rates: list[int] = field(default_factory=lambda: [500, 1000, 2000, 5000, 10000, 20000])
    p99_bound_ms: float = 1000.0
    rounds: int = 5
    bulk: int = 1000
    callers: list[int] = field(default_factory=lambda: [8, 32])
    dm_pairs: int = 50
    dm_rate: float = 100.0


class Bench:
    """The running stack, the lazily opened client pools and the options."""

    def __init__(self, stack: Stack, options: Options) -> None:
        self.stack, self.o = stack, options
        self.pools: dict[str, Pool] = {}

    def pool(self, target: str) -> Pool:
        """The client pool of ``target`` (``hub`` or ``peer``), opened on first use."""
        if target not in self.pools:
            url = self.stack.hub() if target == "hub" else self.stack.peer()
            pid = self.stack.hub_pids[0] if target == "hub" else self.stack.peer_pids[0]
            self.pools[target] = Pool(target, url, self.o.users, self.o.processes, pid)
        return self.pools[target]

    def cpu(self, target: str, before: dict[str, float]) -> tuple[float, float]:
        """Server CPU and server+Redis+PostgreSQL CPU seconds since ``before``."""
        now = self.stack.stack_cpu()
        delta = {k: now[k] - before[k] for k in now}
        server = delta["hub"] if target == "hub" else delta["peer"]
        stack = server + delta["redis"] + (delta["postgres"] if target == "hub" else 0.0)
        return server, stack

    def child(self, module: str, *args: str, timeout: float) -> dict[str, Any]:
        """Runs ``python -m bench.<module> args`` and returns its JSON line."""
        return self.children(module, [list(args)], timeout=timeout)[0]

    def children(self, module: str, argsets: list[list[str]],
                 timeout: float) -> list[dict[str, Any]]:
        """Runs ``python -m bench.<module> args`` for each of ``argsets`` at once; JSON lines."""
        procs = [subprocess.Popen([sys.executable, "-m", f"bench.{module}", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for args in argsets]
        deadline = time.monotonic() + timeout
        results = []
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if proc.returncode:
                    raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
                results.append(orjson.loads(out.splitlines()[-1]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
        return results

    def splits(self, total: int) -> list[tuple[int, int]]:
        """``(first, count)`` shares of ``total`` over at most ``rest_processes`` loaders."""
        n = max(1, min(self.o.rest_processes, total))
        return [(total * i // n, total * (i + 1) // n - total * i // n) for i in range(n)]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def idle(b: Bench) -> list[Row]:
    """RSS per idle connection of the hub and the peer, measured while the pool opened."""
    rows = []
    for target in ("hub", "peer"):
        pool = b.pool(target)
        rows.append(row("idle", target, connections=pool.ready,
                        rss_per_conn_kib=pool.rss_per_connection_kib(),
                        connect_s=round(pool.connect_seconds, 1), failed=pool.failed,
                        server_rss_mib=round(pool.rss_after / 1024, 1)))
    return rows


def unicast_step(b: Bench, scenario: str, target: str, mode: str, rate: int) -> Row:
    """One rung: the publisher offers ``rate``/s for ``seconds``, then deliveries drain."""
    pool, tag = b.pool(target), f"{scenario}-{rate}"
    url = b.stack.hub() if target == "hub" else b.stack.peer()
    common = ["--mode", mode, "--url", url, "--redis", b.stack.redis.url,
              "--seconds", str(b.o.seconds), "--users", str(pool.ready), "--tag", tag,
              "--start-at", repr(time.time() + START_DELAY)]
    # REST is split over loader processes (rate and the 64 connections shared out).
    shares = b.splits(MAX_IN_FLIGHT) if mode == "rest" else [(0, MAX_IN_FLIGHT)]
    before = b.stack.stack_cpu()
    pubs = b.children("publish", [
        [*common, "--rate", repr(rate * count / MAX_IN_FLIGHT), "--max-in-flight", str(count),
         "--seed", str(1 + first)] for first, count in shares], timeout=b.o.seconds + 120)
    pub = {"published": sum(p["published"] for p in pubs),
           "errors": sum(p["errors"] for p in pubs),
           "skipped": sum(p["skipped"] for p in pubs),
           "seconds": max(p["seconds"] for p in pubs), "start": min(p["start"] for p in pubs)}
    delivered = pool.wait(tag, pub["published"], timeout=max(10.0, b.o.seconds))
    server, stack = b.cpu(target, before)
    lat, last = pool.collect(tag)
    window = max(pub["seconds"], last - pub["start"])
    return row(scenario, target, connections=pool.ready, offered_per_s=rate,
               published=pub["published"], delivered=delivered,
               published_per_s=round(pub["published"] / pub["seconds"], 1),
               delivered_per_s=round(delivered / window, 1),
               delivered_ratio=round(delivered / max(1, pub["published"]), 4),
               server_cpu_us_per_frame=cpu_per_frame(server, delivered),
               stack_cpu_us_per_frame=cpu_per_frame(stack, delivered),
               errors=pub["errors"] or None, skipped=pub["skipped"] or None, **latency(lat))


def ladder(b: Bench, scenario: str, target: str, mode: str) -> list[Row]:
    """Climbs the rate ladder until delivery falls under 95 % or p99 passes the bound."""
    rows = []
    for rate in b.o.rates:
        r = unicast_step(b, scenario, target, mode, rate)
        rows.append(r)
        if r["delivered_per_s"] < 0.95 * rate or r["delivered_ratio"] < 0.95 or \
                (r["p99_ms"] or 0) > b.o.p99_bound_ms:
            break
        time.sleep(1)
    return rows


def stream(b: Bench) -> list[Row]:
    return ladder(b, "stream", "hub", "stream")


def rest(b: Bench) -> list[Row]:
    return ladder(b, "rest", "hub", "rest")


def peer(b: Bench) -> list[Row]:
    return ladder(b, "peer", "peer", "peer")


def rest_closed(b: Bench) -> list[Row]:
    """Closed-loop REST creates with each caller count: requests/s and latency."""
    rows = []
    for callers in b.o.callers:
        start_at = repr(time.time() + START_DELAY)
        before = b.stack.stack_cpu()
        parts = b.children("rest", [
            ["--url", b.stack.hub(), "--callers", str(count), "--first", str(first),
             "--seconds", str(b.o.seconds), "--start-at", start_at]
            for first, count in b.splits(callers)], timeout=b.o.seconds + 60)
        server, stack = b.cpu("hub", before)
        requests = sum(p["requests"] for p in parts)
        seconds = max(p["seconds"] for p in parts)
        rows.append(row(f"rest-closed-{callers}", "hub", published=requests,
                        published_per_s=round(requests / seconds, 1),
                        server_cpu_us_per_frame=cpu_per_frame(server, requests),
                        stack_cpu_us_per_frame=cpu_per_frame(stack, requests),
                        callers=callers, errors=sum(p["errors"] for p in parts) or None,
                        **latency([x for p in parts for x in p["lat_ms"]])))
    return rows


def rounds(b: Bench, scenario: str, target: str, send: Any, expected: int) -> Row:
    """``rounds`` single sends (``send(tag, t0)`` returns the request ms): delivery stats."""
    pool = b.pool(target)
    before = b.stack.stack_cpu()
    lat: list[float] = []
    request_ms: list[float] = []
    to_last: list[float] = []
    delivered = 0
    for i in range(b.o.rounds):
        tag, t0 = f"{scenario}-{i}", time.time()
        request_ms.append(send(tag, t0))
        delivered += pool.wait(tag, expected, timeout=30)
        got, last = pool.collect(tag)
        lat += got
        to_last.append((last - t0) * 1000 if got else 0.0)
    server, stack = b.cpu(target, before)
    published = expected * b.o.rounds
    return row(scenario, target, connections=pool.ready, published=published,
               delivered=delivered, delivered_ratio=round(delivered / max(1, published), 4),
               server_cpu_us_per_frame=cpu_per_frame(server, delivered),
               stack_cpu_us_per_frame=cpu_per_frame(stack, delivered),
               last_delivery_ms_p50=latency(to_last)["p50_ms"],
               last_delivery_ms_max=latency(to_last)["max_ms"],
               request_ms_p50=latency(request_ms)["p50_ms"],
               request_ms_max=latency(request_ms)["max_ms"], **latency(lat))


def post(b: Bench, path: str, body: dict[str, Any]) -> float:
    """POSTs ``body`` to the hub with the API key; the request time in ms (after connect)."""
    async def once() -> float:
        conn = Connection(b.stack.hub(), timeout=60)
        raw = conn.post_bytes(path, body)
        await conn.connect()
        t = time.perf_counter()
        try:
            status, answer = await conn.request(raw)
        finally:
            conn.close()
        if not 200 <= status < 300:
            raise RuntimeError(f"POST {path}: {status} {answer[:200]!r}")
        return (time.perf_counter() - t) * 1000

    return asyncio.run(once())


def bulk(b: Bench) -> list[Row]:
    """One ``POST /api/notifications`` with ``user_ids`` of ``bulk`` connected users."""
    users = [f"u{i}" for i in range(min(b.o.bulk, b.pool("hub").ready))]

    def send(tag: str, t0: float) -> float:
        return post(b, "/api/notifications", {"user_ids": users, "type": "bench",
                                              "title": "bulk", "data": {"t0": t0, "tag": tag}})

    return [rounds(b, "bulk", "hub", send, len(users))]


def broadcast(b: Bench) -> list[Row]:
    """An announcement to every hub client, and the peer's emit to all, per round."""
    def hub_send(tag: str, t0: float) -> float:
        return post(b, "/api/announcements", {"title": f"bench {tag}", "body": repr(t0)})

    def peer_send(tag: str, t0: float) -> float:
        t = time.perf_counter()
        asyncio.run(publisher(b.stack.redis.url).emit(BROADCAST, {"t0": t0, "tag": tag}))
        return (time.perf_counter() - t) * 1000

    return [rounds(b, "broadcast", "hub", hub_send, b.pool("hub").ready),
            rounds(b, "broadcast", "peer", peer_send, b.pool("peer").ready)]


def dm(b: Bench) -> list[Row]:
    """DM round trips between users on two instances at ``dm_rate`` per second: the
    hub's, then the peer's (which stores nothing)."""
    return [dm_round_trips(b, "hub"), dm_round_trips(b, "peer")]


def dm_round_trips(b: Bench, target: str) -> Row:
    """``bench.dm`` against two instances of ``target``."""
    start = b.stack.hub if target == "hub" else b.stack.peer
    a, second = start(0), start(1)
    assert a != second, "two instances: each round trip crosses Redis"
    before = b.stack.stack_cpu()
    r = b.child("dm", "--target", target, "--a", a, "--b", second,
                "--pairs", str(b.o.dm_pairs), "--rate", str(b.o.dm_rate),
                "--seconds", str(b.o.seconds), timeout=b.o.seconds + 120)
    server, stack = b.cpu(target, before)
    # Each hub round trip stores two messages (and two new_message notifications).
    return row("dm", f"{target} x2", connections=2 * b.o.dm_pairs,
               offered_per_s=b.o.dm_rate, published=r["sent"], delivered=r["completed"],
               delivered_per_s=round(r["completed"] / r["seconds"], 1),
               delivered_ratio=round(r["completed"] / max(1, r["sent"]), 4),
               server_cpu_us_per_frame=cpu_per_frame(server, r["completed"]),
               stack_cpu_us_per_frame=cpu_per_frame(stack, r["completed"]),
               **latency(r["lat_ms"]))


SCENARIOS = {"idle": idle, "stream": stream, "rest": rest, "peer": peer,
             "rest-closed": rest_closed, "bulk": bulk, "broadcast": broadcast, "dm": dm}
