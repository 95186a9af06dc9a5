"""A closed-loop REST caller process: ``C`` callers each create notifications back to back.

``python -m bench.rest --url URL --callers C --seconds S [--first F] [--start-at T]``
posts ``POST /api/notifications`` (API key, one recipient ``rest<n>`` out of 100,
nobody connected) from callers ``F..F+C-1``, each on its own keep-alive connection
(``bench.http``), from wall-clock time ``T`` until ``S`` seconds pass, and prints one
JSON line ``{"requests", "errors", "seconds", "per_second", "lat_ms"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from bench.http import Connection, HTTPError
from bench.report import print_line


async def run(args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    connections = [Connection(args.url) for _ in range(args.callers)]
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    start = time.perf_counter()
    end = start + args.seconds

    async def caller(n: int, conn: Connection) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < end:
            raw = conn.post_bytes("/api/notifications", {
                "user_id": f"rest{(n * 7 + i) % 100}", "type": "bench", "title": "hello"})
            t = time.perf_counter()
            try:
                status, _ = await conn.request(raw)
                ok = status == 201
            except HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                errors += 1
            i += 1

    await asyncio.gather(*[caller(args.first + k, c) for k, c in enumerate(connections)])
    elapsed = time.perf_counter() - start
    for conn in connections:
        conn.close()
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "per_second": round(len(latencies) / elapsed, 1), "lat_ms": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest")
    parser.add_argument("--url", required=True)
    parser.add_argument("--callers", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first caller")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (time.time()) to start at")
    print_line(uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
