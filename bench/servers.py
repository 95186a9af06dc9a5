"""The processes under test: PostgreSQL, Redis, hub instances and the python-socketio peer.

Everything binds 127.0.0.1 on a free port; every start waits a bounded time and every
process is stopped (SIGTERM, then SIGKILL) when the ``Stack`` closes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from tests.servers import PostgresServer, RedisServer, free_port

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
API_KEY = "bench-api-key-0123456789"
PREFIX = "hub:"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User+system CPU seconds of ``pid`` (0 if gone), plus its reaped children's if asked."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the PostgreSQL backends of a postmaster)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Polls ``url`` until it answers 200; raises if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def hub_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The hub's environment: HS256 secret, API key, Redis, and every rate limit off."""
    return {
        **os.environ,
        "HUB_DATABASE_URL": database_url,
        "HUB_REDIS_URL": redis_url,
        "HUB_REDIS_PREFIX": PREFIX,
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEYS": API_KEY,
        "HUB_DB_POOL_MAX": "10",
        "HUB_OUTBOX_MAX_EVENTS": "10000",
        # The load comes from one address and one API key: measure the hub, not the limiter.
        "HUB_RATE_LIMIT_PER_SECOND": "0",
        "HUB_RATE_LIMIT_IP_PER_SECOND": "0",
        "HUB_RATE_LIMIT_WRITES_PER_SECOND": "0",
        "HUB_RATE_LIMIT_API_KEY_PER_SECOND": "0",
        "HUB_WS_FRAMES_PER_SECOND": "0",
    }


#: ``--email`` modes: deliveries off; email decided for every notification but sent
#: elsewhere (``HUB_DELIVERY_WORKERS=0``); or also sent by the serving hub's workers.
EMAIL_MODES = ("off", "elsewhere", "in-process")
#: The bench's user ids that get a contact email with ``--email`` (the stream and bulk
#: users ``u<n>``, the REST users ``rest<n>``).
CONTACT_USERS = 20_000


class Stack:
    """PostgreSQL + Redis, started at once; hubs and the peer started on demand.

    With ``email`` other than ``off`` the hubs have an email channel (to an SMTP port
    that refuses connections: each delivery is attempted and its retry recorded) and
    every bench user has a contact email, so every notification gets an email delivery.
    Without ``sync_commit`` the hubs' sessions set ``synchronous_commit=off`` (a
    diagnostic: what the WAL flush of each commit costs).
    """

    def __init__(self, hub_src: str = "", email: str = "off", sync_commit: bool = True) -> None:
        self.hub_src = hub_src
        self.email = email
        self.sync_commit = sync_commit
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.procs: list[subprocess.Popen[bytes]] = []
        # Server stderr (tracebacks, warnings) goes to one file, kept for inspection.
        self.log = open(os.path.join(tempfile.gettempdir(), "notifyhub-bench.log"), "wb")
        self.dsn = self.pg.start()
        self.redis.start()
        self.hubs: list[str] = []
        self.hub_pids: list[int] = []
        self.peers: list[str] = []
        self.peer_pids: list[int] = []

    def _spawn(self, args: list[str], env: dict[str, str], health: str, cwd: str = "") -> int:
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=cwd or None,
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        self.procs.append(proc)
        wait_http(health, proc)
        return proc.pid

    def hub(self, index: int = 0) -> str:
        """Base URL of hub instance ``index`` (0 or 1), starting instances as needed."""
        while len(self.hubs) <= index:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            dsn = self.dsn
            if not self.sync_commit:  # diagnostic (--sync-commit off): see docs/benchmarks.md
                dsn += ("&" if "?" in dsn else "?") + "synchronous_commit=off"
            env = hub_env(dsn, self.redis.url)
            if self.hub_src:
                env["PYTHONPATH"] = self.hub_src
            if self.email != "off":
                env.update(HUB_SMTP_URL=f"smtp://127.0.0.1:{free_port()}",
                           HUB_EMAIL_FROM="bench@bench.example",
                           HUB_PUBLIC_URL="http://bench.example")
                if self.email == "elsewhere":
                    env["HUB_DELIVERY_WORKERS"] = "0"
            pid = self._spawn(["-m", "api.cli", "serve", "--port", str(port)], env,
                              f"{url}/health", cwd=self.hub_src)
            self.hubs.append(url)
            self.hub_pids.append(pid)
            if self.email != "off" and index == 0:
                asyncio.run(_add_contacts(self.dsn))
        return self.hubs[index]

    def peer(self, index: int = 0) -> str:
        """Base URL of python-socketio peer instance ``index`` (0 or 1), starting
        instances as needed."""
        while len(self.peers) <= index:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self.peer_pids.append(self._spawn(
                ["-m", "bench.peer", "--port", str(port), "--redis", self.redis.url],
                dict(os.environ), f"{url}/health"))
            self.peers.append(url)
        return self.peers[index]

    def postmaster_pid(self) -> int:
        """The PostgreSQL postmaster's pid (first line of postmaster.pid), or 0."""
        try:
            return int((Path(self.pg.dir) / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def stack_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each hub, the peer, Redis and PostgreSQL (with backends)."""
        pg = self.postmaster_pid()
        redis_pid = self.redis.proc.pid if self.redis.proc else 0
        return {
            "hub": sum(cpu_seconds(p) for p in self.hub_pids),
            "peer": sum(cpu_seconds(p) for p in self.peer_pids),
            "redis": cpu_seconds(redis_pid),
            # Backends come and go: count the live ones and those the postmaster reaped.
            "postgres": cpu_seconds(pg, reaped=True) + sum(cpu_seconds(p) for p in children(pg))
            if pg else 0.0,
        }

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        reap(self.procs, 15)
        self.redis.close()
        self.pg.close()
        self.log.close()


async def _add_contacts(dsn: str) -> None:
    """Give every bench user a contact email (the hub has migrated the database)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO contacts (user_id, email) "
            "SELECT p || g, p || g || '@bench.example' "
            "FROM generate_series(0, $1 - 1) g, unnest(ARRAY['u', 'rest']) p "
            "ON CONFLICT (user_id) DO UPDATE SET email = excluded.email",
            CONTACT_USERS,
        )
    finally:
        await conn.close()


def reap(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for each of ``procs`` to exit, killing the ones still there after ``timeout``."""
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
