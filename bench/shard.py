"""``python -m bench.shard``: what one Redis shard carries for the hub's per-user channels.

Starts a throwaway ``redis-server`` as a one-node Redis Cluster (every slot on it; or
``--mode plain``: no cluster), subscribes ``--channels`` per-user shard channels
(``hub:user:u<n>``, ``SSUBSCRIBE``, as instances do) over ``--connections`` connections
in a subscriber process, then publishes to random subscribed channels at full speed
from another process for ``--seconds`` (pipelined ``SPUBLISH``, or ``--via script``:
the hub's Lua script, ``EVAL`` of up to ``--pipeline`` messages). Then runs the hub's
presence heartbeat (``pubsub.redis_presence``) for ``--presence-users`` users. Prints
one ``SHARD {json}`` line (``KEYS``) and a summary: publishes/s and deliveries/s, Redis
CPU per publish, per subscribe and per user heartbeat, memory per subscription and per
online user. Only 127.0.0.1; every wait is
bounded. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import random
import selectors
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.servers import cpu_seconds, rss_kib
from pubsub.redis_presence import RedisPresence
from tests.servers import free_port, redis_binary

KEYS = (
    "mode", "via", "channels", "connections", "payload_bytes", "pipeline", "seconds",
    "published", "delivered", "publishes_per_s", "deliveries_per_s", "redis_cpu_share",
    "redis_cpu_us_per_publish", "redis_cpu_us_per_delivery", "redis_cpu_us_per_subscribe",
    "used_memory_per_subscription_bytes", "rss_per_subscription_bytes", "redis_version",
    "presence_users", "presence_cpu_us_per_user_heartbeat", "presence_memory_per_user_bytes",
)
PREFIX = "hub:user:u"
#: The hub's publish script (pubsub/cluster.py): channel and message pairs in ARGV.
SCRIPT = ("#!lua flags=allow-cross-slot-keys\n"
          "for i = 1, #ARGV, 2 do redis.call('SPUBLISH', ARGV[i], ARGV[i + 1]) end")
DELIVERY = b"$8\r\nsmessage\r\n"
CONFIRM = b"$10\r\nssubscribe\r\n"


def command(*args: bytes | str) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def call(port: int, *args: str) -> bytes:
    """One command on a fresh connection; its reply (a bulk string's content, or the line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(command(*args))
        reply = b""
        while b"\r\n" not in reply:
            reply += s.recv(1 << 16)
        if not reply.startswith(b"$"):
            return reply
        head, _, body = reply.partition(b"\r\n")
        size = int(head[1:])
        while len(body) < size + 2:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise OSError("connection closed mid-reply")
            body += chunk
        return body[:size]


def info(port: int, section: str) -> dict[str, str]:
    text = call(port, "INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Shard:
    """A throwaway redis-server: a one-node cluster owning every slot, or plain."""

    def __init__(self, mode: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hub-shard-")
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        if mode == "cluster":
            args += ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                     "--cluster-config-file", "nodes.conf"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: call(self.port, "PING").startswith(b"+PONG"), "start")
        if mode == "cluster":
            call(self.port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            self._wait(lambda: info_cluster_ok(self.port), "cover every slot")

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not {what}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        for path in Path(self.dir).iterdir():
            path.unlink()
        Path(self.dir).rmdir()


def info_cluster_ok(port: int) -> bool:
    return b"cluster_state:ok" in call(port, "CLUSTER", "INFO")


def subscriber(port: int, channels: int, connections: int,
               pipe: multiprocessing.connection.Connection) -> None:
    """Subscribe channel n on connection n % connections; count deliveries until told.

    Answers ``"count"`` with the deliveries so far and ``"stop"`` with them and exits.
    Counting the ``smessage`` marker in the raw bytes keeps this process cheap.
    """
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    for i, s in enumerate(socks):
        s.sendall(b"".join(command("SSUBSCRIBE", f"{PREFIX}{n}")
                           for n in range(i, channels, connections)))
    for i, s in enumerate(socks):
        want, seen, tail = len(range(i, channels, connections)), 0, b""
        while seen < want:
            chunk = s.recv(1 << 20)
            if not chunk or chunk.startswith(b"-") or b"\r\n-" in chunk:
                raise RuntimeError(f"SSUBSCRIBE failed: {chunk[:200]!r}")
            data = tail + chunk
            seen += data.count(CONFIRM)
            tail = data[-(len(CONFIRM) - 1):]
    pipe.send("subscribed")
    sel = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        tails[s] = b""
    delivered = 0
    while True:
        for key, _ in sel.select(0.05):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                chunk = ready.recv(1 << 20)
            except BlockingIOError:
                continue
            data = tails[ready] + chunk
            delivered += data.count(DELIVERY)
            tails[ready] = data[-(len(DELIVERY) - 1):]
        if pipe.poll():
            what = pipe.recv()
            pipe.send(delivered)
            if what == "stop":
                return


def publisher(port: int, channels: int, seconds: float, payload: int, pipeline: int, via: str,
              seed: int, pipe: multiprocessing.connection.Connection) -> None:
    """Publish to random channels for ``seconds``, a batch of ``pipeline`` at a time."""
    rng = random.Random(seed)
    message = orjson.dumps({"type": "notification.created", "seq": 1,
                            "data": {"title": "x" * max(0, payload - 60)}})
    batches: list[bytes] = []
    for _ in range(64):  # pre-encoded: measure Redis, not this process's encoding
        targets = [f"{PREFIX}{rng.randrange(channels)}".encode() for _ in range(pipeline)]
        if via == "script":
            args: list[bytes | str] = ["EVAL", SCRIPT, "0"]
            for t in targets:
                args += [t, message]
            batches.append(command(*args))
        else:
            batches.append(b"".join(command("SPUBLISH", t, message) for t in targets))
    replies_per_batch = 1 if via == "script" else pipeline
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        pipe.recv()  # go
        published, start = 0, time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            s.sendall(batches[published // pipeline % len(batches)])
            lines = 0
            while lines < replies_per_batch:
                chunk = s.recv(1 << 16)
                if not chunk or chunk.startswith(b"-") or b"\r\n-" in chunk:
                    raise RuntimeError(f"publish failed: {chunk[:200]!r}")
                lines += chunk.count(b"\r\n")
            published += pipeline
        pipe.send((published, time.monotonic() - start))


async def presence(url: str, port: int, pid: int, users: int, rounds: int) -> dict[str, Any]:
    """The hub's presence heartbeat (``RedisPresence.arrive`` of every local user, each
    ``HUB_PRESENCE_TTL_SECONDS`` / 3) for ``users`` users, ``rounds`` times: Redis CPU
    per user and heartbeat, and memory per online user."""
    store = RedisPresence(url, "{hub:}", "bench-instance")  # the cluster's key names
    await store.start()
    try:
        names = [f"u{n}" for n in range(users)]
        memory0 = int(info(port, "memory")["used_memory"])
        await store.arrive(names)  # arrival: the keys are created
        memory1 = int(info(port, "memory")["used_memory"])
        cpu0 = cpu_seconds(pid)
        for _ in range(rounds):
            await store.arrive(names)
        cpu = cpu_seconds(pid) - cpu0
    finally:
        await store.stop()
    return {
        "presence_users": users,
        "presence_cpu_us_per_user_heartbeat": round(cpu / max(users * rounds, 1) * 1e6, 2),
        "presence_memory_per_user_bytes": round((memory1 - memory0) / max(users, 1), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement; the ``KEYS`` row."""
    shard = Shard(args.mode)
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    try:
        pid = shard.proc.pid
        memory0, rss0 = int(info(shard.port, "memory")["used_memory"]), rss_kib(pid)
        sub_pipe, sub_end = ctx.Pipe()
        sub = ctx.Process(target=subscriber,
                          args=(shard.port, args.channels, args.connections, sub_end))
        cpu0 = cpu_seconds(pid)
        sub.start()
        procs.append(sub)
        if not sub_pipe.poll(120):
            raise RuntimeError("the subscriber did not subscribe within 120 s")
        sub_pipe.recv()
        cpu_subscribe = cpu_seconds(pid) - cpu0
        memory1, rss1 = int(info(shard.port, "memory")["used_memory"]), rss_kib(pid)
        counted = int(info(shard.port, "stats")["pubsubshard_channels"])

        pub_pipes = []
        for seed in range(args.publishers):
            pub_pipe, pub_end = ctx.Pipe()
            pub = ctx.Process(target=publisher, args=(
                shard.port, args.channels, args.seconds, args.payload, args.pipeline, args.via,
                seed, pub_end))
            pub.start()
            procs.append(pub)
            pub_pipes.append(pub_pipe)
        time.sleep(1.0)  # the publishers' interpreters start outside the measured window
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        for pub_pipe in pub_pipes:
            pub_pipe.send("go")
        published, elapsed = 0, 0.0
        for pub_pipe in pub_pipes:
            if not pub_pipe.poll(args.seconds + 60):
                raise RuntimeError("a publisher did not finish")
            count, seconds = pub_pipe.recv()
            published, elapsed = published + count, max(elapsed, seconds)
        # Until the subscriber has everything, or has had nothing new for 2 s.
        delivered, progress, deadline = -1, time.monotonic(), time.monotonic() + 60
        while time.monotonic() < deadline and time.monotonic() - progress < 2:
            sub_pipe.send("count")
            now = sub_pipe.recv()
            if now >= published:
                break
            if now > delivered:
                delivered, progress = now, time.monotonic()
            time.sleep(0.01)
        wall = time.monotonic() - t1
        cpu_publish = cpu_seconds(pid) - cpu1
        sub_pipe.send("stop")
        delivered = sub_pipe.recv()
        sub.join(timeout=10)
        # Redis frees the subscriptions when it sees the connections close: wait, so
        # that the presence measurement's memory delta does not include that.
        deadline = time.monotonic() + 10
        while (int(info(shard.port, "stats")["pubsubshard_channels"])
               and time.monotonic() < deadline):
            time.sleep(0.05)
        subs = args.channels
        # A plain client, whose calls of one heartbeat go out in one pipeline: the node
        # owns every slot, and the scripts cost the same under either key layout.
        present = asyncio.run(presence(f"redis://127.0.0.1:{shard.port}", shard.port, pid,
                                       args.presence_users, args.presence_rounds))
        return present | {
            "mode": args.mode, "via": args.via, "channels": args.channels,
            "subscriptions_counted": counted,
            "connections": args.connections, "payload_bytes": args.payload,
            "pipeline": args.pipeline, "seconds": args.seconds,
            "published": published, "delivered": delivered,
            "publishers": args.publishers,
            "publishes_per_s": round(published / elapsed, 1),
            "deliveries_per_s": round(delivered / wall, 1),
            "redis_cpu_share": round(cpu_publish / wall, 3),
            "redis_cpu_us_per_publish": round(cpu_publish / max(published, 1) * 1e6, 2),
            "redis_cpu_us_per_delivery": round(cpu_publish / max(delivered, 1) * 1e6, 2),
            "redis_cpu_us_per_subscribe": round(cpu_subscribe / subs * 1e6, 2),
            "used_memory_per_subscription_bytes": round((memory1 - memory0) / subs, 1),
            "rss_per_subscription_bytes": round((rss1 - rss0) * 1024 / subs, 1),
            "redis_version": info(shard.port, "server")["redis_version"],
        }
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        shard.close()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.shard", description=__doc__)
    p.add_argument("--channels", type=int, default=50_000, help="subscribed user channels")
    p.add_argument("--connections", type=int, default=4,
                   help="subscriber connections (one per instance on this shard)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to publish")
    p.add_argument("--payload", type=int, default=300, help="message bytes (about)")
    p.add_argument("--publishers", type=int, default=1, help="publishing processes")
    p.add_argument("--pipeline", type=int, default=100, help="messages per round trip")
    p.add_argument("--via", choices=("spublish", "script"), default="spublish",
                   help="pipelined SPUBLISH, or the hub's Lua script (EVAL per batch)")
    p.add_argument("--presence-users", type=int, default=50_000,
                   help="online users of the presence heartbeat measurement")
    p.add_argument("--presence-rounds", type=int, default=5, help="heartbeats measured")
    p.add_argument("--mode", choices=("cluster", "plain"), default="cluster",
                   help="a one-node Redis Cluster (every slot), or a plain redis-server")
    return p.parse_args()


def main() -> None:
    args = parse()
    row = run(args)
    print("SHARD " + orjson.dumps(row).decode(), flush=True)
    print(f"{row['channels']:,} channels over {row['connections']} connections, "
          f"{row['via']} ({row['mode']}): {row['publishes_per_s']:,}/s published, "
          f"{row['deliveries_per_s']:,}/s delivered ({row['delivered']}/{row['published']}); "
          f"Redis CPU {row['redis_cpu_us_per_publish']} µs/publish "
          f"({row['redis_cpu_share']:.0%} of a core), "
          f"{row['redis_cpu_us_per_subscribe']} µs/SSUBSCRIBE; "
          f"{row['used_memory_per_subscription_bytes']} B used_memory and "
          f"{row['rss_per_subscription_bytes']} B RSS per subscription; presence: "
          f"{row['presence_cpu_us_per_user_heartbeat']} µs of Redis CPU per user heartbeat, "
          f"{row['presence_memory_per_user_bytes']} B per online user")


if __name__ == "__main__":
    main()
