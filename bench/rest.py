"""A closed-loop REST caller process: ``C`` callers each create notifications back to back.

``python -m bench.rest --url URL --callers C --seconds S`` posts ``POST
/api/notifications`` (API key, one recipient ``rest<n>`` out of 100, nobody connected)
until ``S`` seconds pass, and prints one JSON line ``{"requests", "errors",
"seconds", "per_second", "lat_ms"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson

from bench.servers import API_KEY


async def run(args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=args.callers, max_keepalive_connections=args.callers)
    async with httpx.AsyncClient(base_url=args.url, headers={"X-API-Key": API_KEY},
                                 timeout=30, limits=limits) as client:
        start = time.perf_counter()
        end = start + args.seconds

        async def caller(n: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    r = await client.post("/api/notifications", json={
                        "user_id": f"rest{(n * 7 + i) % 100}", "type": "bench",
                        "title": "hello"})
                    ok = r.status_code == 201
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t) * 1000)
                else:
                    errors += 1
                i += 1

        await asyncio.gather(*[caller(n) for n in range(args.callers)])
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "per_second": round(len(latencies) / elapsed, 1), "lat_ms": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest")
    parser.add_argument("--url", required=True)
    parser.add_argument("--callers", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    print(orjson.dumps(asyncio.run(run(parser.parse_args()))).decode(), flush=True)


if __name__ == "__main__":
    main()
