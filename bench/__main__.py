"""``python -m bench``: the benchmark scoreboard, notifyhub and a python-socketio peer.

Starts a throwaway PostgreSQL and Redis, one hub process (two for ``dm``) and the
peer, runs the chosen scenarios with load from child processes, and prints one
``BENCH {json}`` line per result row and a Markdown table at the end. Only 127.0.0.1;
every loop is bounded in count and time. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

from bench.report import emit, machine, table
from bench.scenarios import SCENARIOS, Bench, Options
from bench.servers import EMAIL_MODES, Stack


def options(args: argparse.Namespace) -> Options:
    """The scenario options from the command line; ``--quick`` shrinks every default."""
    o = Options()
    if args.quick:
        o.users, o.seconds, o.rates, o.rounds = 200, 2.0, [200, 1000], 2
        o.bulk, o.dm_pairs, o.dm_rate = 200, 10, 20.0
    for name in ("users", "processes", "rest_processes", "seconds", "rounds", "bulk",
                 "dm_pairs", "dm_rate", "p99_bound_ms"):
        value = getattr(args, name)
        if value is not None:
            setattr(o, name, value)
    if args.rates:
        o.rates = [int(x) for x in args.rates.split(",")]
    if args.callers:
        o.callers = [int(x) for x in args.callers.split(",")]
    return o


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    p.add_argument("--users", type=int, help="connected users per target (2000)")
    p.add_argument("--processes", type=int, help="client processes per target (2)")
    p.add_argument("--rest-processes", type=int,
                   help="REST load-generator processes, load split evenly (2)")
    p.add_argument("--seconds", type=float, help="length of each rung / run (10)")
    p.add_argument("--rates", help="offered rates per second, comma-separated")
    p.add_argument("--p99-bound-ms", type=float, help="stop climbing above this p99 (1000)")
    p.add_argument("--rounds", type=int, help="bulk and broadcast rounds (5)")
    p.add_argument("--bulk", type=int, help="recipients of one bulk create (1000)")
    p.add_argument("--callers", help="closed-loop REST caller counts (8,32)")
    p.add_argument("--dm-pairs", type=int, help="DM user pairs (50)")
    p.add_argument("--dm-rate", type=float, help="DM round trips per second (100)")
    p.add_argument("--email", choices=EMAIL_MODES, default="off",
                   help="deliveries: off; email decided for every notification and sent "
                        "elsewhere; or also sent by the hub (docs/benchmarks.md)")
    p.add_argument("--sync-commit", choices=("on", "off"), default="on",
                   help="off: the hubs' database sessions commit without waiting for the "
                        "WAL flush; a diagnostic of what durability costs, never how "
                        "notifyhub runs (docs/benchmarks.md)")
    p.add_argument("--hub-src", default="",
                   help="run the hub from this source tree (default: this checkout)")
    return p.parse_args()


def main() -> None:
    args = parse()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    o = options(args)
    started = time.monotonic()
    stack = Stack(args.hub_src, args.email, args.sync_commit == "on")
    bench = Bench(stack, o)
    rows = []
    try:
        for name in chosen:
            for r in SCENARIOS[name](bench):
                emit(r)
                rows.append(r)
    finally:
        bench.close()
        stack.close()
    print(f"\n## notifyhub vs python-socketio ({machine()})\n")
    print(f"{o.users} users per target, {o.seconds:g} s per rung, "
          f"run took {time.monotonic() - started:.0f} s\n")
    print(table(rows))


if __name__ == "__main__":
    main()
