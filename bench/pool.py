"""The orchestrator's handle on the client processes of one target (hub or peer).

Users ``u0..u{N-1}`` are split over ``processes`` ``bench.clients`` children; the pool
talks to them over their stdin/stdout, one JSON line each way, with bounded waits.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from typing import Any

import orjson

from bench.servers import reap, rss_kib


class Pool:
    """``users`` live connections to ``url`` spread over client processes."""

    def __init__(self, target: str, url: str, users: int, processes: int, server_pid: int):
        self.target, self.users = target, users
        before = rss_kib(server_pid)
        started = time.monotonic()
        share = -(-users // processes)
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.clients", "--target", target, "--url", url,
                 "--first", str(first), "--count", str(min(share, users - first))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            for first in range(0, users, share)
        ]
        answers = [self._read(p, timeout=180) for p in self.procs]
        self.connect_seconds = time.monotonic() - started
        self.ready = sum(a["ready"] for a in answers)
        self.failed = sum(a["failed"] for a in answers)
        time.sleep(1)  # let the server settle its per-connection allocations
        self.rss_before, self.rss_after = before, rss_kib(server_pid)

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"client process {proc.pid} did not answer in {timeout} s")
        result: dict[str, Any] = orjson.loads(line)
        return result

    def _ask(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        line = orjson.dumps(cmd) + b"\n"
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        return [self._read(p, timeout=120) for p in self.procs]

    def count(self, tag: str) -> int:
        """Frames received so far for ``tag``, over all connections."""
        return sum(a["count"] for a in self._ask({"cmd": "count", "tag": tag}))

    def wait(self, tag: str, expected: int, timeout: float) -> int:
        """Frames of ``tag`` once ``expected`` arrived, ``timeout`` passed or 3 s without one."""
        deadline = time.monotonic() + timeout
        got, last_growth, last = 0, time.monotonic(), -1
        while time.monotonic() < deadline:
            got = self.count(tag)
            if got >= expected:
                break
            if got != last:
                last, last_growth = got, time.monotonic()
            elif time.monotonic() - last_growth > 3:
                break
            time.sleep(0.1)
        return got

    def collect(self, tag: str) -> tuple[list[float], float]:
        """All latencies (ms) of ``tag`` and the last receive time; forgets the tag."""
        answers = self._ask({"cmd": "collect", "tag": tag})
        lat = [x for a in answers for x in a["lat_ms"]]
        return lat, max((a["last"] for a in answers), default=0.0)

    def rss_per_connection_kib(self) -> float:
        """The server's RSS growth while these connections opened, per connection."""
        return round((self.rss_after - self.rss_before) / max(1, self.ready), 1)

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd":"quit"}\n')
                proc.stdin.close()
            except OSError:
                pass
        reap(self.procs, 20)
