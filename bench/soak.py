"""The soak: two hubs on one Redis and one PostgreSQL, mixed load, faults, then checks.

``python -m bench.soak [--seconds 180]`` (``make soak ARGS="--seconds 600"``) starts a
throwaway PostgreSQL (behind a stallable TCP proxy), a throwaway Redis and two hub
processes, then for ``--seconds`` runs at once:

- REST creates (``POST /api/notifications``, API key, idempotency key
  ``soak-rest-<n>``, title ``rest <n>``), retried up to 4 times with the same key on
  a 5xx or a dropped connection;
- stream ingest (``XADD {prefix}ingest``, title ``ingest <n>``, no idempotency key);
- direct messages (``POST /api/messages/send``, client id ``soak-dm-<n>``), retried
  like the creates;
- reconnecting WebSocket and SSE clients, one per user, from ``since=0``, which also
  leave and come back on their own every ``--churn`` seconds or so;
- a stalled client on the hub that is never killed (it connects and never reads),
  whose user gets a share of the creates with 2 KB bodies;
- faults every ``--fault-every`` seconds, in turn: hub 0 SIGKILLed and restarted,
  Redis SIGKILLed and restarted on its port, the database stalled
  ``--stall-seconds``.

Then it lets ingest and the clients settle and checks, against PostgreSQL and Redis:
every accepted create, entry and message stored exactly once; every ingest entry
applied or dead-lettered; every client received its user's whole log exactly once and
in order. It prints ``CHECK <name>: ok|FAIL …`` lines, a table of figures (with each
hub's RSS and open file descriptors at start and end) and one ``SOAK {json}`` line,
and exits 1 if any check failed. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from bench.clients import raise_nofile, token
from bench.http import Connection, HTTPError
from bench.servers import PREFIX, hub_env, reap, rss_kib, wait_http
from bench.soakclients import Tally, sse_reader, stalled_client, ws_reader
from tests.proxy import StallableProxy
from tests.servers import PostgresServer, RedisServer, free_port

ATTEMPTS = 4
IN_FLIGHT = 64


def fds(pid: int) -> int:
    """Open file descriptors of ``pid`` (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class HubSlot:
    """One hub instance on a fixed port, restarted on the same port after a kill."""

    def __init__(self, index: int, env: dict[str, str], log: Any) -> None:
        self.index = index
        self.port = free_port()
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.up = False
        self.restarts = 0
        self.start_rss = self.start_fds = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> None:
        """Starts the process and waits for ``/health``."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(f"{self.url}/health", self.proc, 90)
        self.up = True

    def mark_start(self) -> None:
        self.start_rss, self.start_fds = rss_kib(self.pid), fds(self.pid)

    def kill(self) -> None:
        """SIGKILL, then reap."""
        self.up = False
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.up = False
        if self.proc is not None:
            self.proc.terminate()
            reap([self.proc], 15)
            self.proc = None


@dataclass
class Ledger:
    """What the load offered and what was accepted (``n`` → outcome)."""

    rest: dict[int, str] = field(default_factory=dict)
    ingest: dict[int, str | None] = field(default_factory=dict)
    dm: dict[int, str] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


async def paced(name: str, rate: float, seconds: float, ledger: Ledger,
                launch: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Calls ``launch(n)`` ``rate`` times a second for ``seconds``, at most ``IN_FLIGHT``
    at once (a call beyond that is skipped and counted, never queued)."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        while n < int((now - start) * rate):
            if len(tasks) >= IN_FLIGHT:
                ledger.skipped[name] += 1
            else:
                task = asyncio.create_task(launch(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ledger = Ledger()
        self.faults: list[dict[str, Any]] = []
        self.ws_users = [f"soakw{i}" for i in range(args.ws_users)]
        self.sse_users = [f"soaks{i}" for i in range(args.sse_users)]
        self.users = self.ws_users + self.sse_users
        self.stalled_user = "soakstalled"
        self.tallies = [Tally(u, "ws") for u in self.ws_users] + \
            [Tally(u, "sse") for u in self.sse_users]
        # The hubs' stderr, one file per run (kept for inspection; its path is printed).
        fd, self.log_path = tempfile.mkstemp(prefix="notifyhub-soak-", suffix=".log")
        self.log = os.fdopen(fd, "wb")
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.proxy: StallableProxy | None = None
        self.hubs: list[HubSlot] = []
        self.conns: dict[str, list[Connection]] = {}

    # ---- the stack ---------------------------------------------------------------

    def start(self) -> None:
        self.dsn = self.pg.start()
        socket_dir = parse_qs(urlsplit(self.dsn).query)["host"][0]
        [path] = [p for p in glob.glob(os.path.join(socket_dir, ".s.PGSQL.*"))
                  if not p.endswith(".lock")]
        self.proxy = proxy = StallableProxy(path)  # a Unix socket path
        proxy.start()
        self.redis.start()
        env = hub_env(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres",
                      self.redis.url)
        # A killed hub's pending entries are taken over within the run, not after 30 s.
        env["HUB_INGEST_CLAIM_IDLE_SECONDS"] = "5"
        self.hubs = [HubSlot(i, env, self.log) for i in range(2)]
        for hub in self.hubs:
            hub.start()

    def close(self) -> None:
        for hub in self.hubs:
            hub.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.redis.close()
        self.pg.close()
        self.log.close()

    def urls(self) -> list[str]:
        """Base URLs of the instances that are up (both, but for a restart)."""
        return [h.url for h in self.hubs if h.up] or [self.hubs[-1].url]

    # ---- load --------------------------------------------------------------------

    async def post(self, path: str, body: dict[str, Any], attempt: int) -> int:
        """POSTs with the API key to an instance that is up; the status, 0 if no answer."""
        urls = self.urls()
        url = urls[attempt % len(urls)]
        idle = self.conns.setdefault(url, [])
        conn = idle.pop() if idle else Connection(url, timeout=20)
        try:
            status, _ = await conn.post(path, body)
        except HTTPError:
            return 0
        idle.append(conn)
        return status

    async def create(self, n: int) -> None:
        stalled = n % 5 == 4
        body = {"user_id": self.stalled_user if stalled else self.users[n % len(self.users)],
                "type": "soak", "title": f"rest {n}", "idempotency_key": f"soak-rest-{n}",
                "body": "x" * 2000 if stalled else ""}
        self.ledger.rest[n] = await self.retrying("rest", lambda a: self.post(
            "/api/notifications", body, a))

    async def retrying(self, name: str, call: Callable[[int], Awaitable[int]]) -> str:
        """``accepted`` after a 2xx; retries a 5xx or no answer; else what failed."""
        status = 0
        for attempt in range(ATTEMPTS):
            if attempt:
                self.ledger.retries[name] += 1
                await asyncio.sleep(1)
            status = await call(attempt)
            if 200 <= status < 300:
                return "accepted"
            if 400 <= status < 500:
                return f"refused {status}"
        return f"failed {status or 'no answer'}"

    async def ingest(self, n: int, r: aioredis.Redis) -> None:
        payload = orjson.dumps({"user_id": self.users[n % len(self.users)], "type": "soak",
                                "title": f"ingest {n}"})
        try:
            entry = await r.xadd(f"{PREFIX}ingest", {"payload": payload})
        except (aioredis.RedisError, OSError):
            self.ledger.ingest[n] = None
            return
        self.ledger.ingest[n] = str(entry)

    async def message(self, n: int, http: httpx.AsyncClient) -> None:
        sender = self.users[n % len(self.users)]
        users = len(self.users)
        recipient = self.users[(n + 1 + (n // users) % (users - 1)) % users]
        body = {"recipient_id": recipient, "body": f"dm {n}", "client_id": f"soak-dm-{n}"}
        headers = {"Authorization": f"Bearer {token(sender)}"}

        async def call(attempt: int) -> int:
            urls = self.urls()
            try:
                response = await http.post(f"{urls[attempt % len(urls)]}/api/messages/send",
                                            json=body, headers=headers)
            except httpx.HTTPError:
                return 0
            return response.status_code

        self.ledger.dm[n] = await self.retrying("dm", call)

    # ---- faults ------------------------------------------------------------------

    async def inject(self, seconds: float) -> None:
        period = min(self.args.fault_every, seconds / 4)
        kinds = itertools.cycle(["hub kill", "redis restart", "database stall"])
        start = time.monotonic()
        at = period
        while at < seconds - 3:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            kind = next(kinds)
            began = time.monotonic()
            if kind == "hub kill":
                victim = self.hubs[0]
                await asyncio.to_thread(victim.kill)
                await asyncio.sleep(1)
                await asyncio.to_thread(victim.start)
                victim.restarts += 1
                victim.mark_start()
            elif kind == "redis restart":
                await asyncio.to_thread(self.redis.kill)
                await asyncio.sleep(1)
                await asyncio.to_thread(self.redis.start)
            else:
                assert self.proxy is not None
                self.proxy.stall()
                await asyncio.sleep(self.args.stall_seconds)
                self.proxy.resume()
            self.faults.append({"at_s": round(began - start, 1), "fault": kind,
                                "lasted_s": round(time.monotonic() - began, 1)})
            at += period

    # ---- the run -----------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        readers = [asyncio.create_task(
            (ws_reader if t.kind == "ws" else sse_reader)(t, self.urls, self.args.churn))
            for t in self.tallies]
        stalled = stalled_client(self.hubs[1].url, self.stalled_user)
        r = aioredis.Redis.from_url(self.redis.url, socket_timeout=5,
                                    socket_connect_timeout=2, decode_responses=True)
        db = await asyncpg.connect(self.dsn)
        try:
            await self.until(lambda: all(t.connects for t in self.tallies), 60, "clients")
            await asyncio.sleep(1)
            for hub in self.hubs:
                hub.mark_start()
            seconds = self.args.seconds
            async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
                await asyncio.gather(
                    paced("rest", self.args.rest_rate, seconds, self.ledger, self.create),
                    paced("ingest", self.args.ingest_rate, seconds, self.ledger,
                          lambda n: self.ingest(n, r)),
                    paced("dm", self.args.dm_rate, seconds, self.ledger,
                          lambda n: self.message(n, http)),
                    self.inject(seconds),
                )
            settled = time.monotonic()
            await self.until(lambda: self.ingest_settled(db, r), self.args.settle, "ingest")
            await self.until(lambda: self.clients_settled(db), self.args.settle, "clients")
            settle_s = time.monotonic() - settled
            hubs = [{"hub": h.index, "restarts": h.restarts,
                     "rss_start_kib": h.start_rss, "rss_end_kib": rss_kib(h.pid),
                     "fds_start": h.start_fds, "fds_end": fds(h.pid)} for h in self.hubs]
            return await self.check(db, r, hubs, settle_s)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            stalled.close()
            for conns in self.conns.values():
                for conn in conns:
                    conn.close()
            await r.aclose()
            await db.close()

    @staticmethod
    async def until(ready: Callable[[], Any], seconds: float, what: str) -> None:
        """Polls ``ready()`` (a bool or an awaitable of one) until true; returns anyway
        after ``seconds`` (the checks then report what is missing)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done = ready()
            if not isinstance(done, bool):
                done = await done
            if done:
                return
            await asyncio.sleep(0.5)
        print(f"soak: {what} not settled after {seconds:.0f} s", file=sys.stderr, flush=True)

    async def ingest_settled(self, db: asyncpg.Connection, r: aioredis.Redis) -> bool:
        with contextlib.suppress(aioredis.RedisError, OSError):
            applied = await db.fetchval(
                "SELECT count(*) FROM notifications WHERE type = 'soak' AND title LIKE 'ingest %'")
            dead = await r.xlen(f"{PREFIX}ingest:dead")
            accepted = sum(1 for e in self.ledger.ingest.values() if e)
            return bool(applied + dead >= accepted)
        return False

    async def clients_settled(self, db: asyncpg.Connection) -> bool:
        heads = dict(await db.fetch("SELECT user_id, last_seq FROM user_counters"))
        return all(t.last >= heads.get(t.user, 0) for t in self.tallies)

    # ---- checks ------------------------------------------------------------------

    async def check(self, db: asyncpg.Connection, r: aioredis.Redis,
                    hubs: list[dict[str, Any]], settle_s: float) -> dict[str, Any]:
        stored = Counter({row["title"]: row["count"] for row in await db.fetch(
            "SELECT title, count(*) FROM notifications WHERE type = 'soak' GROUP BY title")})
        dms = Counter({row["client_id"]: row["count"] for row in await db.fetch(
            "SELECT client_id, count(*) FROM direct_messages"
            " WHERE client_id LIKE 'soak-dm-%' GROUP BY client_id")})
        dead = {str(fields["id"]): str(fields.get("error", ""))
                for _, fields in await r.xrange(f"{PREFIX}ingest:dead") or []
                if fields and "id" in fields}
        checks: dict[str, list[str]] = {}

        def outcome(name: str, ledger: dict[int, Any], count: Callable[[int], int],
                    dead_ok: Callable[[int], bool] = lambda n: False) -> dict[str, int]:
            """Accepted (a 2xx, or an entry id): stored once or dead-lettered; never twice."""
            lost, dup, refused = [], [], []
            for n, state in sorted(ledger.items()):
                c = count(n)
                if c > 1 or (c and dead_ok(n)):
                    dup.append(n)
                elif state == "accepted" or (state and name == "ingest entries"):
                    if c == 0 and not dead_ok(n):
                        lost.append(n)
                elif state and state.startswith("refused"):
                    refused.append(n)
            checks[f"{name} stored exactly once"] = \
                [f"lost #{n}" for n in lost[:10]] + [f"duplicated #{n}" for n in dup[:10]]
            checks[f"{name} never refused"] = [f"#{n}: {ledger[n]}" for n in refused[:10]]
            return {"offered": len(ledger), "lost": len(lost), "duplicated": len(dup),
                    "refused": len(refused)}

        rest = outcome("REST creates", self.ledger.rest, lambda n: stored[f"rest {n}"])
        ingest = outcome("ingest entries", self.ledger.ingest, lambda n: stored[f"ingest {n}"],
                         lambda n: self.ledger.ingest[n] in dead)
        dm = outcome("direct messages", self.ledger.dm, lambda n: dms[f"soak-dm-{n}"])
        extra = [t for t, c in stored.items() if c > 1]
        checks["no notification stored twice"] = extra[:10]
        for name, figures, ledger in (("rest", rest, self.ledger.rest),
                                      ("dm", dm, self.ledger.dm)):
            figures["accepted"] = sum(1 for s in ledger.values() if s == "accepted")
            figures["failed"] = sum(1 for s in ledger.values() if s.startswith("failed"))
            figures["retries"] = self.ledger.retries[name]
            figures["skipped"] = self.ledger.skipped[name]
        ingest["accepted"] = sum(1 for e in self.ledger.ingest.values() if e)
        ingest["xadd_failed"] = ingest["offered"] - ingest["accepted"]
        ingest["dead_lettered"] = sum(1 for e in self.ledger.ingest.values() if e in dead)
        ingest["skipped"] = self.ledger.skipped["ingest"]
        checks["something was accepted"] = [
            f"nothing accepted by {k}" for k, f in (("REST", rest), ("ingest", ingest),
                                                   ("DMs", dm)) if not f["accepted"]]

        clients = []
        problems: list[str] = []
        for t in self.tallies:
            log = [(row["seq"], row["type"]) for row in await db.fetch(
                "SELECT seq, type FROM user_events WHERE user_id = $1 ORDER BY seq", t.user)]
            figures, problem = t.compare(log)
            if problem:
                problems.append(problem)
            clients.append(figures)
        checks["every client got its log exactly once, in order"] = problems
        with open(self.log_path, "rb") as f:
            tracebacks = f.read().count(b"Traceback (most recent call last)")
        return {"seconds": self.args.seconds, "settle_s": round(settle_s, 1),
                "faults": self.faults, "rest": rest, "ingest": ingest, "dm": dm,
                "clients": clients, "hubs": hubs, "hub_log_tracebacks": tracebacks,
                "dead_letters": [f"{i}: {e}" for i, e in list(dead.items())[:5]],
                "checks": {k: v for k, v in checks.items()}}


# ---- output ----------------------------------------------------------------------------


def report(result: dict[str, Any]) -> bool:
    """Prints the checks, the figures and the ``SOAK`` line; True when every check passed."""
    ok = True
    for name, problems in result["checks"].items():
        ok = ok and not problems
        print(f"CHECK {name}: " + ("ok" if not problems else "FAIL " + "; ".join(problems)))
    print()
    print(f"{result['seconds']:.0f} s of load, then {result['settle_s']} s to settle; faults: "
          + (", ".join(f"{f['fault']} at {f['at_s']} s ({f['lasted_s']} s)"
                       for f in result["faults"]) or "none"))
    print()
    print("| load | offered | accepted | retries | failed (not accepted) | lost | duplicated |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, key, fail in (("REST creates", "rest", "failed"),
                            ("ingest entries", "ingest", "xadd_failed"),
                            ("direct messages", "dm", "failed")):
        f = result[key]
        print(f"| {name} | {f['offered']} | {f['accepted']} | {f.get('retries', '-')} | "
              f"{f[fail]} | {f['lost']} | {f['duplicated']} |")
    clients = result["clients"]
    print()
    print("| clients | users | events expected | received | missing | duplicated | "
          "out of order | connections |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("ws", "sse"):
        cs = [c for c in clients if c["kind"] == kind]
        print(f"| {kind} | {len(cs)} | " + " | ".join(str(sum(c[k] for c in cs)) for k in (
            "expected", "received", "missing", "duplicated", "disorder", "connects")) + " |")
    print()
    print("| hub | restarts | RSS start MiB | RSS end MiB | growth MiB | fds start | fds end |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for h in result["hubs"]:
        print(f"| {h['hub']} | {h['restarts']} | {h['rss_start_kib'] / 1024:.1f} | "
              f"{h['rss_end_kib'] / 1024:.1f} | "
              f"{(h['rss_end_kib'] - h['rss_start_kib']) / 1024:+.1f} | "
              f"{h['fds_start']} | {h['fds_end']} |")
    print()
    print(f"tracebacks in the hub logs: {result['hub_log_tracebacks']}; dead letters: "
          + ("; ".join(result["dead_letters"]) or "none"))
    print("SOAK " + orjson.dumps(result).decode(), flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="load time (180)")
    parser.add_argument("--rest-rate", type=float, default=15, help="creates per second (15)")
    parser.add_argument("--ingest-rate", type=float, default=15,
                        help="XADDs per second (15)")
    parser.add_argument("--dm-rate", type=float, default=4, help="messages per second (4)")
    parser.add_argument("--ws-users", type=int, default=6, help="WebSocket clients (6)")
    parser.add_argument("--sse-users", type=int, default=6, help="SSE clients (6)")
    parser.add_argument("--churn", type=float, default=30,
                        help="clients reconnect on their own every 0.5-1.5 x this (30 s)")
    parser.add_argument("--fault-every", type=float, default=20,
                        help="seconds between faults (20; at most a quarter of --seconds)")
    parser.add_argument("--stall-seconds", type=float, default=4,
                        help="how long the database stalls (4)")
    parser.add_argument("--settle", type=float, default=120,
                        help="at most this long for ingest and the clients to catch up (120)")
    args = parser.parse_args()
    raise_nofile()
    soak = Soak(args)
    try:
        soak.start()
        result = asyncio.run(soak.run())
    except RuntimeError as exc:  # a hub or Redis that did not (re)start
        print(f"CHECK the stack (re)started: FAIL {exc}")
        result = None
    finally:
        soak.close()
    ok = result is not None and report(result)
    print(f"hub logs: {soak.log_path}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
