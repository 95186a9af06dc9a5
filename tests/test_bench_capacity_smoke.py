"""Smoke test of the capacity scripts ``python -m bench.shard`` and ``bench.eventlog``,
and of the path and floor measures ``bench.paths`` and ``bench.durablefloor``.

Each runs briefly; asserts what they report (every key, every publish delivered, the
rows they created), never timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench import eventlog, shard

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, tag: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    (line,) = [x for x in done.stdout.decode().splitlines() if x.startswith(tag + " ")]
    row: dict[str, Any] = orjson.loads(line[len(tag) + 1:])
    return row


def test_shard_delivers_every_publish_to_its_subscribed_channel_and_reports_costs() -> None:
    row = run("bench.shard", "SHARD", "--channels", "300", "--connections", "2",
              "--seconds", "0.5", "--via", "script", "--pipeline", "20",
              "--presence-users", "100", "--presence-rounds", "1")
    assert set(shard.KEYS) <= set(row)
    assert row["subscriptions_counted"] == 300
    assert row["published"] > 0 and row["delivered"] == row["published"]
    assert row["redis_cpu_us_per_publish"] is not None
    assert row["used_memory_per_subscription_bytes"] > 0
    assert row["presence_users"] == 100 and row["presence_memory_per_user_bytes"] > 0


def test_eventlog_reports_the_size_of_every_table_a_create_writes() -> None:
    row = run("bench.eventlog", "EVENTLOG", "--notifications", "200", "--users", "20",
              "--head-rounds", "2")
    assert set(eventlog.KEYS) <= set(row)
    tables = row["tables"]
    assert tables["notifications"]["rows"] == 200
    assert tables["notification_requests"]["rows"] == 200
    # One event per create, and one more per user for marking the inbox read.
    assert tables["user_events"]["rows"] == row["events"] == 220
    assert row["bytes_per_notification"] > 0
    assert row["pruned_events"] == 220 and row["pg_cpu_us_per_pruned_event"] is not None


def test_paths_create_stores_every_notification_it_times() -> None:
    row = run("bench.paths", "PATHS", "create", "--batches", "30", "--recipients", "10")
    assert row["one"]["batches"] == 30 and row["bulk"]["recipients"] == 10
    assert row["one"]["cpu_us"]["p50"] > 0 and row["bulk"]["wall_ms"]["p99"] > 0
    # 20 warm-up batches of each kind; bulk: max(5, 30 // 100) timed batches of 10 users.
    assert row["stored"] == (30 + 20) + (5 + 20) * 10


def test_paths_send_stores_every_message_it_times() -> None:
    row = run("bench.paths", "PATHS", "send", "--sends", "30")
    assert row["sends"] == 30 and row["cpu_us"]["p50"] > 0 and row["wall_ms"]["p99"] > 0
    assert row["stored"] == 30 + 20  # 20 warm-up sends


def test_paths_send_through_the_writer_stores_every_message_it_times() -> None:
    row = run("bench.paths", "PATHS", "send", "--sends", "30", "--writer")
    assert row["writer"] is True and row["cpu_us"]["p50"] > 0 and row["wall_ms"]["p99"] > 0
    assert row["stored"] == 30 + 20  # 20 warm-up sends


def test_paths_subscribe_receives_every_published_message() -> None:
    row = run("bench.paths", "PATHS", "subscribe", "--messages", "2000")
    assert row["received"] == row["messages"] == 2000
    assert row["cpu_us_per_message"] > 0


def test_durable_floor_times_each_step_and_their_sum() -> None:
    row = run("bench.durablefloor", "FLOOR", "60")
    assert row["n"] == 60
    assert set(row) == {"n", "pg commit", "pg select", "redis xadd", "redis publish",
                        "xadd + commit"}
    for name in ("pg commit", "redis xadd", "xadd + commit"):
        assert 0 < row[name]["p50_ms"] <= row[name]["p99_ms"] <= row[name]["max_ms"]
