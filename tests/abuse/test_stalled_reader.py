"""A client that stops reading at the TCP level: the hub closes it as slow (4008, or
the SSE stream ends), and once the close grace (5 s) has passed without the client
reading, the transport is aborted: the socket is gone from the hub's side, its kernel
send queue with it. A stalled or vanished client never holds a socket on the hub.

The hub is ``notifyhub serve`` in a child process (uvloop, as in production), fed over
Redis; the clients are raw sockets that send their request and never read again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from pubsub.session import wire
from tests.conftest import make_token
from tests.live.conftest import HubProcess
from tests.live.test_cluster import cluster, http_client
from tests.live.test_faults_slow_client import metric

#: The close grace of docs/live.md, and how long past it the test waits at most.
GRACE = 5.0
MARGIN = 20.0
PAD = 60_000
ESTABLISHED = 0x01


def _server_side(hub_port: int, client_port: int) -> tuple[int, int] | None:
    """(state, bytes in the send queue) of the hub's end of one loopback TCP connection,
    from ``/proc/net/tcp``; None once the hub's side is gone."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if (
                int(local.split(":")[1], 16) == hub_port
                and int(remote.split(":")[1], 16) == client_port
            ):
                return int(state, 16), int(queues.split(":")[0], 16)
    return None


@contextlib.contextmanager
def stalled_client(port: int, request: bytes) -> Iterator[socket.socket]:
    """A raw socket that sends ``request``, reads the response head, then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    sock.settimeout(10)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, "the hub closed before answering"
            head += chunk
        assert head.split(b" ", 2)[1] in (b"101", b"200"), head
        yield sock
    finally:
        sock.close()


def ws_request(port: int, user: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={make_token(user)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def sse_request(port: int, user: str) -> bytes:
    return (
        f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {make_token(user)}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


@contextlib.asynccontextmanager
async def one_hub(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str, **settings: Any
) -> AsyncIterator[tuple[HubProcess, httpx.AsyncClient, aioredis.Redis]]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            cluster(tmp_path, 1, database_url=database_url, redis_url=redis_url,
                    redis_prefix=redis_prefix, **settings) as (hub,),
            http_client(hub) as http,
        ):
            yield hub, http, redis
    finally:
        await redis.aclose()


async def flood_until_slow(
    http: httpx.AsyncClient, redis: aioredis.Redis, channel: str
) -> None:
    """Publish big ephemeral frames to ``channel`` until the hub counts a slow client."""
    frame = orjson.dumps({"type": "typing", "seq": None, "data": {"pad": "x" * PAD}})
    async with asyncio.timeout(60):
        while await metric(http, "notifyhub_slow_client_disconnects_total") == 0:
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(20):
                    pipe.publish(channel, wire(None, frame))
                await pipe.execute()


async def open_connections(http: httpx.AsyncClient) -> float:
    """``notifyhub_connections`` summed over its transports."""
    text = (await http.get("/metrics")).text
    return sum(float(m[1]) for m in re.finditer(r"^notifyhub_connections\{.*\} (\S+)$",
                                                 text, re.MULTILINE))


async def gone(hub_port: int, client_port: int) -> tuple[int, int] | None:
    """Wait until the hub's side of the connection is gone; what is left if it is not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE + MARGIN
    while (left := _server_side(hub_port, client_port)) is not None:
        if loop.time() > deadline:
            return left
        await asyncio.sleep(0.2)
    return None


def errors_logged(hub: HubProcess) -> list[str]:
    return [line for line in hub.log().splitlines() if re.search(r"ERROR|Traceback", line)]


async def _stall(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str, transport: str
) -> None:
    async with one_hub(tmp_path, database_url, redis_url, redis_prefix) as (hub, http, redis):
        port = int(hub.url.rsplit(":", 1)[1])
        request = ws_request(port, "u1") if transport == "ws" else sse_request(port, "u1")
        with stalled_client(port, request) as sock:
            client_port = sock.getsockname()[1]
            await flood_until_slow(http, redis, f"{redis_prefix}user:u1")
            state = _server_side(port, client_port)
            assert state is not None and state[0] == ESTABLISHED
            # The grace passes without the client reading: the hub aborts the transport.
            assert await gone(port, client_port) is None, "the hub kept the socket"
            assert await open_connections(http) == 0
            # The client sees a reset, not an orderly end of what was queued for it.
            with contextlib.suppress(OSError):
                sock.settimeout(5)
                while sock.recv(65536):
                    pass
            assert (await http.get("/health")).status_code == 200
        assert errors_logged(hub) == []


async def test_a_websocket_that_stops_reading_is_aborted_after_the_close_grace(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    await _stall(tmp_path, database_url, redis_url, redis_prefix, "ws")


async def test_an_sse_stream_that_stops_reading_is_aborted_after_the_close_grace(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    await _stall(tmp_path, database_url, redis_url, redis_prefix, "sse")


async def test_an_sse_client_that_stops_reading_then_leaves_logs_no_error(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with one_hub(tmp_path, database_url, redis_url, redis_prefix) as (hub, http, redis):
        port = int(hub.url.rsplit(":", 1)[1])
        with stalled_client(port, sse_request(port, "u1")) as sock:
            client_port = sock.getsockname()[1]
            await flood_until_slow(http, redis, f"{redis_prefix}user:u1")
        # The client went away (within the grace) without reading what it was sent.
        assert await gone(port, client_port) is None, "the hub kept the socket"
        async with asyncio.timeout(GRACE + MARGIN):
            while await open_connections(http):
                await asyncio.sleep(0.1)
        await asyncio.sleep(GRACE + 1)  # past the grace: nothing is logged then either
        assert (await http.get("/health")).status_code == 200
        assert errors_logged(hub) == []



async def test_a_websocket_that_stops_reading_and_answering_pings_is_aborted(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Its buffers fill but its queue never overflows: the unanswered ping closes it."""
    async with one_hub(tmp_path, database_url, redis_url, redis_prefix,
                       heartbeat_seconds=1) as (hub, http, redis):
        port = int(hub.url.rsplit(":", 1)[1])
        with stalled_client(port, ws_request(port, "u1")) as sock:
            client_port = sock.getsockname()[1]
            frame = orjson.dumps({"type": "typing", "seq": None, "data": {"pad": "x" * PAD}})
            for _ in range(20):  # 1.2 MB: fills the socket buffers, far below the queue
                await redis.publish(f"{redis_prefix}user:u1", wire(None, frame))
            assert await gone(port, client_port) is None, "the hub kept the socket"
            assert await metric(http, "notifyhub_slow_client_disconnects_total") == 0
            assert await open_connections(http) == 0
        assert errors_logged(hub) == []
