"""The soak (``python -m bench.soak``, docs/reliability.md) for 30 s, and its client check.

The short run has all three faults (a hub SIGKILLed and restarted, Redis restarted, a
database stall) and must end with every check passing: nothing accepted is lost or
stored twice, and every client got its user's log exactly once, in order. The checker
itself is shown to catch a gap, a duplicate, disorder and a resync.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.soakclients import Tally

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def soak() -> tuple[list[str], dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--seconds", "30"], cwd=ROOT,
                          capture_output=True, timeout=400)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stdout.decode()[-4000:] + done.stderr.decode()[-3000:]
    [summary] = [orjson.loads(line[5:]) for line in lines if line.startswith("SOAK ")]
    return lines, summary


def test_a_30_second_soak_with_every_fault_passes_every_check(
        soak: tuple[list[str], dict[str, Any]]) -> None:
    lines, summary = soak
    checks = [line for line in lines if line.startswith("CHECK ")]
    assert len(checks) == len(summary["checks"]) >= 8
    assert all(line.endswith(": ok") for line in checks), checks
    assert {f["fault"] for f in summary["faults"]} == {
        "hub kill", "redis restart", "database stall"}
    assert summary["hubs"][0]["restarts"] == 1


def test_the_soak_load_was_accepted_and_received(
        soak: tuple[list[str], dict[str, Any]]) -> None:
    _, summary = soak
    for load in ("rest", "ingest", "dm"):
        assert summary[load]["accepted"] > 0, summary[load]
        assert summary[load]["lost"] == summary[load]["duplicated"] == 0
    assert {c["kind"] for c in summary["clients"]} == {"ws", "sse"}
    for client in summary["clients"]:
        assert client["received"] == client["expected"] > 0, client


def tally(seqs: list[int], resyncs: int = 0) -> Tally:
    t = Tally("u", "ws", resyncs=resyncs)
    for s in seqs:
        t.take(s, "notification.created")
    return t


LOG = [(s, "notification.created") for s in (1, 2, 3, 4)]


def test_the_client_check_passes_the_whole_log_in_order() -> None:
    figures, problem = tally([1, 2, 3, 4]).compare(LOG)
    assert problem is None
    assert figures["received"] == figures["expected"] == 4


@pytest.mark.parametrize(("seqs", "resyncs", "found"), [
    ([1, 2, 4], 0, "1 missing [3]"),
    ([1, 2, 2, 3, 4], 0, "1 duplicated"),
    ([1, 3, 2, 4], 0, "1 out of order"),
    ([1, 2, 3, 4, 5], 0, "1 not in the log [5]"),
    ([1, 2, 3, 4], 1, "1 resyncs"),
])
def test_the_client_check_reports_a_gap_duplicate_disorder_or_resync(
        seqs: list[int], resyncs: int, found: str) -> None:
    _, problem = tally(seqs, resyncs).compare(LOG)
    assert problem is not None and found in problem


def test_the_client_check_reports_an_event_of_another_type() -> None:
    t = tally([1, 2, 3])
    t.take(4, "message.created")
    _, problem = t.compare(LOG)
    assert problem is not None and "1 of another type" in problem
