"""A client process: holds one WebSocket per user to the hub or the peer and timestamps frames.

Run as ``python -m bench.clients --target hub|peer --url URL --first I --count N``. It
prints ``{"ready": n, "failed": f}`` once connected, then answers one JSON line per
command read from stdin: ``{"cmd": "count", "tag": t}`` → ``{"count": n}``;
``{"cmd": "collect", "tag": t}`` → ``{"lat_ms": [...], "last": unix_time}`` (and forgets
the tag); ``{"cmd": "quit"}`` closes every connection and exits. Latency is the
receive time minus the ``t0`` (``time.time()``) stamped by whoever published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.servers import SECRET


def raise_nofile() -> None:
    """Raises the soft open-files limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def token(user: str) -> str:
    """An HS256 user JWT for ``user``, valid for an hour."""
    from hub.settings import Settings
    from hub.tokens import Tokens

    return Tokens(Settings(jwt_secret=SECRET)).issue(user, ttl=3600)


class Recorder:
    """Latencies (ms), counts and the last receive time per tag."""

    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.last: dict[str, float] = {}

    def hit(self, tag: str, t0: float) -> None:
        now = time.time()
        self.lat[tag].append((now - t0) * 1000)
        self.last[tag] = now


def on_hub_frame(raw: str | bytes, rec: Recorder) -> None:
    """Records a hub ``notification.created`` or bench ``announcement.created`` frame."""
    frame = orjson.loads(raw)
    kind = frame.get("type")
    if kind == "notification.created":
        data = frame["data"].get("data") or {}
        if "tag" in data:
            rec.hit(data["tag"], data["t0"])
    elif kind == "announcement.created":
        title, body = frame["data"]["title"], frame["data"]["body"]
        if title.startswith("bench "):
            rec.hit(title[6:], float(body))


#: Connections per loopback source address: each (source, destination) pair has ~28,000
#: ephemeral ports (``net.ipv4.ip_local_port_range``), so beyond this many clients
#: the next ones connect from 127.0.0.2, 127.0.0.3, ... (all of 127/8 is loopback).
PER_SOURCE = 20_000


def source(index: int) -> tuple[str, int] | None:
    """The local address the ``index``-th client binds: None (the default, 127.0.0.1)
    for the first ``PER_SOURCE``, then one more loopback address per ``PER_SOURCE``."""
    extra = index // PER_SOURCE
    return None if extra == 0 else (f"127.0.0.{1 + extra}", 0)


async def hub_client(url: str, user: str, local: tuple[str, int] | None = None
                     ) -> ClientConnection:
    """A WebSocket to the hub, past its ``hello``, offering permessage-deflate."""
    ws = await connect(f"{url}/ws?token={token(user)}", max_size=2**20,
                       ping_interval=None, open_timeout=60, local_addr=local)
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
    if hello.get("type") != "hello":
        raise RuntimeError(f"expected hello, got {hello}")
    return ws


async def peer_client(url: str, user: str, local: tuple[str, int] | None = None
                      ) -> ClientConnection:
    """An Engine.IO v4 WebSocket to the peer, past the Socket.IO CONNECT of namespace /."""
    ws = await connect(f"{url}/socket.io/?EIO=4&transport=websocket", max_size=2**20,
                       ping_interval=None, open_timeout=60, local_addr=local)
    opened = await asyncio.wait_for(ws.recv(), 60)
    if not str(opened).startswith("0"):
        raise RuntimeError(f"expected an Engine.IO open packet, got {opened!r}")
    await ws.send("40" + orjson.dumps({"user": user}).decode())
    connected = await asyncio.wait_for(ws.recv(), 60)
    if not str(connected).startswith("40"):
        raise RuntimeError(f"expected a Socket.IO CONNECT, got {connected!r}")
    return ws


async def read_hub(ws: ClientConnection, rec: Recorder) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            on_hub_frame(raw, rec)


async def peer_events(ws: ClientConnection) -> AsyncIterator[tuple[str, Any]]:
    """Each Socket.IO event ``42[event, data]`` the peer sends ``ws``, as
    ``(event, data)``; Engine.IO pings (``2``) answered with ``3`` on the way."""
    async for raw in ws:
        text = raw if isinstance(raw, str) else raw.decode()
        if text == "2":
            await ws.send("3")
        elif text.startswith("42"):
            event, data = orjson.loads(text[2:])[:2]
            yield event, data


async def read_peer(ws: ClientConnection, rec: Recorder) -> None:
    """Records the peer's events that carry a bench ``tag``."""
    with contextlib.suppress(Exception):
        async for _event, data in peer_events(ws):
            if isinstance(data, dict) and "tag" in data:
                rec.hit(data["tag"], data["t0"])


def reply(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    raise_nofile()
    rec = Recorder()
    opener = hub_client if args.target == "hub" else peer_client
    reader = read_hub if args.target == "hub" else read_peer
    base = args.url.replace("http", "ws", 1)
    users = range(args.first, args.first + args.count)
    sockets: list[ClientConnection] = []
    failed = 0
    for i in range(0, len(users), 100):
        opened = await asyncio.gather(*[opener(base, f"u{n}", source(n))
                                        for n in users[i:i + 100]],
                                      return_exceptions=True)
        for ws in opened:
            if isinstance(ws, BaseException):
                failed += 1
            else:
                sockets.append(ws)
    tasks = [asyncio.create_task(reader(ws, rec)) for ws in sockets]
    reply({"ready": len(sockets), "failed": failed})
    while line := await asyncio.to_thread(sys.stdin.readline):
        cmd = orjson.loads(line)
        if cmd["cmd"] == "count":
            reply({"count": len(rec.lat.get(cmd["tag"], ()))})
        elif cmd["cmd"] == "collect":
            reply({"lat_ms": rec.lat.pop(cmd["tag"], []), "last": rec.last.pop(cmd["tag"], 0)})
        else:
            break
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*[ws.close() for ws in sockets], return_exceptions=True), 10)
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    parser.add_argument("--target", choices=["hub", "peer"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    asyncio.run(run(args=parser.parse_args()))


if __name__ == "__main__":
    main()
