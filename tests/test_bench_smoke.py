"""Smoke test of ``python -m bench``: every scenario runs briefly at a low rate.

Asserts behaviour only (every published notification, announcement and DM arrives;
each row is a ``BENCH {json}`` line with the expected keys), never timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.report import KEYS
from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--quick", "--users", "40", "--processes", "1", "--seconds", "1.5", "--rates", "40",
        "--rounds", "1", "--bulk", "40", "--callers", "2", "--dm-pairs", "4", "--dm-rate", "8"]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "bench", *ARGS], cwd=ROOT,
                          capture_output=True, timeout=150)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    lines = done.stdout.decode().splitlines()
    assert any(line.startswith("| scenario |") for line in lines)
    return [orjson.loads(line[6:]) for line in lines if line.startswith("BENCH ")]


def test_every_scenario_reports_rows_with_the_expected_keys(rows: list[dict[str, Any]]) -> None:
    assert rows
    for r in rows:
        assert set(KEYS) <= set(r), r
    seen = {r["scenario"] for r in rows}
    expected = set(SCENARIOS) - {"rest-closed"} | {"rest-closed-2"}
    assert expected <= seen


def test_idle_connections_all_open_on_both_targets(rows: list[dict[str, Any]]) -> None:
    idle = {r["target"]: r for r in rows if r["scenario"] == "idle"}
    assert set(idle) == {"hub", "peer"}
    for r in idle.values():
        assert r["connections"] == 40 and r["failed"] == 0
        assert r["rss_per_conn_kib"] is not None


def test_dm_round_trips_run_on_two_hubs_and_two_peers(rows: list[dict[str, Any]]) -> None:
    dm = {r["target"]: r for r in rows if r["scenario"] == "dm"}
    assert set(dm) == {"hub x2", "peer x2"}
    for r in dm.values():
        assert r["connections"] == 8 and r["server_cpu_us_per_frame"] is not None


@pytest.mark.parametrize("scenario", ["stream", "rest", "peer", "bulk", "broadcast", "dm"])
def test_everything_published_is_delivered(rows: list[dict[str, Any]], scenario: str) -> None:
    found = [r for r in rows if r["scenario"] == scenario]
    assert found
    for r in found:
        assert r["published"] > 0, r
        assert r["delivered"] == r["published"], r
        assert r["p50_ms"] is not None and r["max_ms"] is not None


def test_closed_loop_rest_creates_without_errors(rows: list[dict[str, Any]]) -> None:
    (r,) = [r for r in rows if r["scenario"] == "rest-closed-2"]
    assert r["published"] > 0
    assert r.get("errors") is None
