"""The soak's live clients: reconnecting WebSocket and SSE readers, and a stalled client.

Each reader belongs to one user, starts from ``since=0`` (the user has no events yet)
and runs until cancelled: it connects to one of the instances that is up, records the
``seq`` and type of every logged event it receives in a ``Tally``, and on any drop
(closed, refused, reset, timed out) reconnects to a random instance with its last
``seq`` (WebSocket ``since``, SSE ``Last-Event-ID``), as docs/live.md tells clients to.
It also leaves on its own after a random 0.5–1.5 × ``churn`` seconds (as a page reload
does) and reconnects the same way, so that clients keep spreading over both instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.clients import token

# Events of the user's log (they carry a seq); everything else is ephemeral.
LOGGED = frozenset({
    "notification.created", "notifications.read", "notification.deleted",
    "message.created", "messages.read", "message.deleted",
})


@dataclass
class Tally:
    """What one user's client received, across all its connections."""

    user: str
    kind: str
    seqs: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    connects: int = 0
    resyncs: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def take(self, seq: int, type_: str) -> None:
        self.seqs.append(seq)
        self.types.append(type_)

    def compare(self, log: list[tuple[int, str]]) -> tuple[dict[str, Any], str | None]:
        """Figures of what was received against the user's ``log`` of ``(seq, type)``,
        and a description of what is wrong (None when it is exactly the log, in order:
        no seq missing, none twice, none out of order, none unknown, no resync)."""
        types = dict(log)
        seen = Counter(self.seqs)
        missing = sorted(types.keys() - seen.keys())
        unknown = sorted(seen.keys() - types.keys())
        dups = sum(c - 1 for c in seen.values() if c > 1)
        disorder = sum(1 for a, b in itertools.pairwise(self.seqs) if b <= a)
        wrong = sum(1 for s, ty in zip(self.seqs, self.types, strict=True)
                    if s in types and types[s] != ty)
        figures = {"user": self.user, "kind": self.kind, "expected": len(log),
                   "received": len(self.seqs), "missing": len(missing), "duplicated": dups,
                   "disorder": disorder, "connects": self.connects, "drops": dict(self.drops)}
        if not (missing or unknown or dups or disorder or wrong or self.resyncs):
            return figures, None
        return figures, (f"{self.user} ({self.kind}): {len(missing)} missing {missing[:5]}, "
                         f"{dups} duplicated, {disorder} out of order, {len(unknown)} not in "
                         f"the log {unknown[:5]}, {wrong} of another type, "
                         f"{self.resyncs} resyncs")


Urls = Callable[[], list[str]]


async def pause_before_reconnect() -> None:
    await asyncio.sleep(random.uniform(0.05, 0.5))


def lifetime(churn: float) -> float:
    """How long a connection stays before the client leaves on its own."""
    return churn * random.uniform(0.5, 1.5)


async def ws_reader(tally: Tally, urls: Urls, churn: float) -> None:
    """``tally.user``'s WebSocket client, reconnecting for ever (until cancelled)."""
    while True:
        base = random.choice(urls()).replace("http", "ws", 1)
        url = f"{base}/ws?token={token(tally.user)}&since={tally.last}"
        try:
            async with connect(url, open_timeout=15, close_timeout=2, max_size=2**22,
                               proxy=None, compression=None) as ws:
                hello = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
                if hello.get("type") != "hello":
                    raise ValueError(f"first frame {hello.get('type')!r}")
                tally.connects += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(lifetime(churn)):
                        async for raw in ws:
                            frame = orjson.loads(raw)
                            if frame["seq"] is not None:
                                tally.take(frame["seq"], frame["type"])
                            elif frame["type"] == "resync":
                                tally.resyncs += 1
                        tally.drops["closed"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any drop: count it and reconnect
            tally.drops[type(exc).__name__] += 1
        await pause_before_reconnect()


async def sse_reader(tally: Tally, urls: Urls, churn: float) -> None:
    """``tally.user``'s SSE client, resuming with ``Last-Event-ID`` (until cancelled)."""
    timeout = httpx.Timeout(15, read=45)  # keep-alive comments come every 15 s
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
        while True:
            headers = {"Authorization": f"Bearer {token(tally.user)}",
                       "Last-Event-ID": str(tally.last)}
            try:
                async with http.stream("GET", f"{random.choice(urls())}/api/stream",
                                       headers=headers) as response:
                    if response.status_code != 200:
                        raise ValueError(f"status {response.status_code}")
                    tally.connects += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(lifetime(churn)):
                            await read_sse(response, tally)
                            tally.drops["ended"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                tally.drops[type(exc).__name__] += 1
            await pause_before_reconnect()


async def read_sse(response: httpx.Response, tally: Tally) -> None:
    """Records the logged events of an SSE stream until it ends."""
    event = id_ = None
    async for line in response.aiter_lines():
        if line == "":
            if event in LOGGED and id_ is not None:
                tally.take(int(id_), event)
            elif event == "resync":
                tally.resyncs += 1
            event = id_ = None
            continue
        name, _, value = line.partition(":")
        if name == "event":
            event = value.removeprefix(" ")
        elif name == "id":
            id_ = value.removeprefix(" ")


def stalled_client(url: str, user: str) -> socket.socket:
    """A WebSocket opened with a tiny receive buffer that is never read from."""
    host, _, port = url.removeprefix("http://").partition(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /ws?token={token(user)}&since=0 HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: c29hay1zdGFsbGVkLWNsaWU=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode())
    return sock
