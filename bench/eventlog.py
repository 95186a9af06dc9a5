"""``python -m bench.eventlog``: what PostgreSQL stores per notification and per event.

Starts a throwaway PostgreSQL (pgserver), migrates it, and creates ``--notifications``
notifications for ``--users`` users through the hub's own code (``hub.notifications.
create``: its group commit and SQL, the in-process broker), from the ``grade_posted``
template, each with an idempotency key unless ``--no-keys``. Then every user marks
their inbox read (``mark_all_read``: one more event each), the head check's query runs
over every user ``--head-rounds`` times, and the prune deletes every event (made old
first) and VACUUM reclaims them. Reports, per table that grew,
``pg_total_relation_size`` (heap, indexes, TOAST) and rows; bytes per notification and
per event; WAL bytes and PostgreSQL CPU per notification, per user of a head check and
per pruned and vacuumed event. Prints one ``EVENTLOG {json}`` line (``KEYS``) and a
summary. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.servers import children, cpu_seconds
from db import events as event_log
from hub import notifications
from hub.models import NotificationCreate
from hub.runtime import Runtime
from hub.settings import Settings
from tests.servers import PostgresServer

KEYS = (
    "notifications", "users", "events", "tables", "bytes_per_notification",
    "event_bytes_per_event", "notification_bytes_per_notification", "wal_bytes_per_notification",
    "pg_cpu_us_per_notification", "pg_cpu_us_per_head_lookup", "pg_cpu_us_per_pruned_event",
)
SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes, c.reltuples
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public'
"""


async def sizes(conn: asyncpg.Connection) -> dict[str, int]:
    await conn.execute("ANALYZE")
    return {r["relname"]: r["bytes"] for r in await conn.fetch(SIZES)}


async def count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))


def pg_cpu(pgdata: Path) -> float:
    """CPU seconds of the postmaster, its live backends and the ones it reaped."""
    pm = int((pgdata / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(pm, reaped=True) + sum(cpu_seconds(c) for c in children(pm))


async def measure(dsn: str, pgdata: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(database_url=dsn, redis_url=None, delivery_workers=0)
    async with Runtime(settings, live=False) as runtime:
        await runtime.open_database()
        await runtime.migrate()
        svc = await runtime.connect()
        probe = await asyncpg.connect(dsn)
        try:
            version = await probe.fetchval("SHOW server_version")
            before = await sizes(probe)
            wal0 = await probe.fetchval("SELECT pg_current_wal_lsn()")
            cpu0 = pg_cpu(pgdata)
            n, users = args.notifications, args.users
            for start in range(0, n, args.concurrency):
                await asyncio.gather(*(
                    notifications.create(svc, NotificationCreate(
                        user_id=f"user-{i % users:07d}", type="grade_posted",
                        template="grade_posted",
                        data={"assignment": f"Essay {i}", "grade": "A-", "grade_id": i},
                        idempotency_key=None if args.no_keys else f"grade-{i:012d}",
                    ))
                    for i in range(start, min(n, start + args.concurrency))
                ))
            cpu_create = pg_cpu(pgdata) - cpu0
            wal = await probe.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", wal0)
            created = await sizes(probe)
            created_events = await count(probe, "user_events")
            for start in range(0, users, args.concurrency):
                await asyncio.gather(*(
                    notifications.mark_all_read(svc, f"user-{u:07d}", None)
                    for u in range(start, min(users, start + args.concurrency))
                ))
            after = await sizes(probe)
            tables = {}
            for name in sorted(after):
                grown = after[name] - before.get(name, 0)
                if grown > 0:
                    rows = await count(probe, name)
                    tables[name] = {"bytes": grown, "rows": rows,
                                    "bytes_per_row": round(grown / rows, 1) if rows else None}
            events = await count(probe, "user_events")
            # The head check: each instance asks for its connected users' heads every
            # HUB_HEAD_CHECK_SECONDS, 1000 users per query (hub/node.py).
            names = [f"user-{u:07d}" for u in range(users)]
            cpu0 = pg_cpu(pgdata)
            for _ in range(args.head_rounds):
                for i in range(0, users, 1000):
                    await event_log.heads(svc.pool, names[i:i + 1000])
            head_lookups = args.head_rounds * users
            cpu_heads = pg_cpu(pgdata) - cpu0
            # The hourly prune, once every event is old: the hub's DELETE (with no
            # per-user floor, so that all go), then the VACUUM that reclaims them.
            await probe.execute("UPDATE user_events SET created_at = now() - interval '30 days'")
            await probe.execute("VACUUM ANALYZE user_events")
            cpu0 = pg_cpu(pgdata)
            async with svc.pool.acquire() as conn:
                pruned = await event_log.prune(conn, 7, 0)
            cpu_prune = pg_cpu(pgdata) - cpu0
            cpu0 = pg_cpu(pgdata)
            await probe.execute("VACUUM user_events")
            cpu_vacuum = pg_cpu(pgdata) - cpu0
        finally:
            await probe.close()
    event_bytes = after["user_events"] - before["user_events"]
    return {
        "notifications": n, "users": users, "idempotency_keys": not args.no_keys,
        "events": events, "events_per_notification_created": round(created_events / n, 3),
        "tables": tables,
        "bytes_per_notification": round(
            sum(created[t] - before.get(t, 0) for t in created) / n, 1),
        "notification_bytes_per_notification": round(
            (created["notifications"] - before["notifications"]) / n, 1),
        "event_bytes_per_event": round(event_bytes / events, 1),
        "event_bytes_per_created_event": round(
            (created["user_events"] - before["user_events"]) / created_events, 1),
        "wal_bytes_per_notification": round(float(wal) / n, 1),
        "pg_cpu_us_per_notification": round(cpu_create / n * 1e6, 1),
        "pg_cpu_us_per_head_lookup": round(cpu_heads / max(head_lookups, 1) * 1e6, 2),
        "pruned_events": pruned,
        "pg_cpu_us_per_pruned_event": round(cpu_prune / max(pruned, 1) * 1e6, 2),
        "pg_cpu_us_per_vacuumed_event": round(cpu_vacuum / max(pruned, 1) * 1e6, 2),
        "postgres_version": version,
    }


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.eventlog", description=__doc__)
    p.add_argument("--notifications", type=int, default=50_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--concurrency", type=int, default=200,
                   help="creates in flight at once (the group commit batches them)")
    p.add_argument("--head-rounds", type=int, default=20,
                   help="head checks of every user, for the CPU of one user's lookup")
    p.add_argument("--no-keys", action="store_true", help="creates without idempotency keys")
    return p.parse_args()


def main() -> None:
    args = parse()
    server = PostgresServer()
    try:
        dsn = server.start()
        row = asyncio.run(measure(dsn, Path(server.dir) / "pgdata", args))
    finally:
        server.close()
    print("EVENTLOG " + orjson.dumps(row).decode(), flush=True)
    print(f"{row['notifications']:,} notifications for {row['users']:,} users: "
          f"{row['bytes_per_notification']} B stored per notification "
          f"({row['notification_bytes_per_notification']} B in notifications), "
          f"{row['event_bytes_per_created_event']} B per created event in user_events "
          f"({row['event_bytes_per_event']} B with the read events), "
          f"{row['wal_bytes_per_notification']} B of WAL and "
          f"{row['pg_cpu_us_per_notification']} µs of PostgreSQL CPU per notification; "
          f"{row['pg_cpu_us_per_head_lookup']} µs per user in a head check; pruning "
          f"{row['pg_cpu_us_per_pruned_event']} µs and vacuuming "
          f"{row['pg_cpu_us_per_vacuumed_event']} µs per event")
    for name, t in row["tables"].items():
        print(f"  {name}: {t['bytes']:,} B, {t['rows']:,} rows, {t['bytes_per_row']} B/row")


if __name__ == "__main__":
    main()
