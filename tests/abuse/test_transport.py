"""HTTP transport limits: header size and deadline, idle keep-alive, the connection cap,
the file-descriptor limit (docs/api.md, "Connection limits")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SECRET
from tests.live.conftest import (
    HubProcess,
    LiveHub,
    T,
    hub_env,
    live_hub,
    notify,
    recv,
    sse_stream,
    ws_connect,
)
from tests.waiting import eventually

HEALTH = b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n"


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[Stream]:
    """A plain TCP connection to the hub at ``url``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), T)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def until_closed(reader: asyncio.StreamReader, timeout: float = T) -> bytes:
    """Everything the hub sends until it closes the connection (a reset counts as closed)."""
    received = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


def status_of(response: bytes) -> int:
    """The status code of the raw HTTP response ``response``."""
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return orjson.loads(response.partition(b"\r\n\r\n")[2])


async def open_idle(url: str, n: int) -> list[socket.socket]:
    """``n`` connected sockets that never send anything."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), T)
        socks.append(sock)
    return socks


async def health(url: str) -> httpx.Response:
    """``GET /health`` on a connection of its own."""
    async with httpx.AsyncClient(base_url=url, timeout=T, trust_env=False) as http:
        return await http.get("/health")


# ---- header size ---------------------------------------------------------------------


async def test_a_header_block_over_the_limit_gets_431_at_once_and_is_not_read_further(
    hub: LiveHub,
) -> None:
    sent = 0
    total = 64 * 1024 * 1024

    async with raw(hub.url) as (reader, writer):

        async def flood() -> None:
            nonlocal sent
            writer.write(b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Big: ")
            chunk = b"a" * (1024 * 1024)
            with contextlib.suppress(ConnectionError):
                while sent < total:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)

        sender = asyncio.create_task(flood())
        try:
            response = await until_closed(reader, 5)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert status_of(response) == 431, response[:200]
    assert body_of(response)["status"] == 431
    # The hub stopped reading at the limit: the kernel buffers took the rest, not the hub.
    assert sent < total // 2
    assert (await hub.http.get("/health")).status_code == 200


async def test_many_headers_over_the_limit_in_total_get_431(hub: LiveHub) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    async with raw(hub.url) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: hub\r\n" + headers + b"\r\n")
        response = await until_closed(reader)
    assert status_of(response) == 431


async def test_headers_under_the_limit_and_a_large_body_in_one_read_are_served(
    hub: LiveHub,
) -> None:
    # Headers and a 200 KiB body arrive together: only the header block counts.
    body = orjson.dumps({"user_id": "u1", "type": "t", "title": "x" * 200_000})
    request = (
        b"POST /api/notifications HTTP/1.1\r\nHost: hub\r\nX-API-Key: test-api-key-0123456789\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    async with raw(hub.url) as (reader, writer):
        writer.write(request)
        response = await until_closed(reader)
    assert status_of(response) in (201, 422), response[:300]


# ---- header deadline and keep-alive --------------------------------------------------


async def test_a_fresh_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, header_timeout_seconds=1) as hub, raw(hub.url) as (
        reader, _,
    ):
        assert await until_closed(reader, 10) == b""
        assert (await hub.http.get("/health")).status_code == 200


async def test_a_slowloris_trickle_is_closed_at_the_header_deadline_with_408(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, header_timeout_seconds=2) as hub, raw(hub.url) as (
        reader, writer,
    ):

        async def trickle() -> None:
            writer.write(b"GET /health HTTP/1.1\r\nHost: hub\r\n")
            with contextlib.suppress(ConnectionError):
                for i in range(1000):
                    writer.write(b"X-%d: y\r\n" % i)
                    await writer.drain()
                    await asyncio.sleep(0.2)

        sender = asyncio.create_task(trickle())
        try:
            response = await until_closed(reader, 15)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        assert status_of(response) == 408
        assert body_of(response)["status"] == 408


async def test_a_slow_second_request_on_a_kept_alive_connection_is_closed_at_the_deadline(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, header_timeout_seconds=2) as hub, raw(hub.url) as (
        reader, writer,
    ):
        writer.write(HEALTH)
        first = await asyncio.wait_for(reader.readuntil(b"}"), T)
        assert status_of(first) == 200

        async def trickle() -> None:
            # Each byte would restart uvicorn's keep-alive timer; the header deadline holds.
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /health HTTP/1.1\r\n" + b"X" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.2)

        sender = asyncio.create_task(trickle())
        try:
            response = await until_closed(reader, 15)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        assert status_of(response) == 408


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_setting(
    settings_env: dict[str, Any],
) -> None:
    # uvicorn's own keep-alive is 5 s; the setting (0.5 s) must be what holds.
    async with live_hub(**settings_env, keepalive_seconds=0.5) as hub, raw(hub.url) as (
        reader, writer,
    ):
        writer.write(HEALTH)
        first = await asyncio.wait_for(reader.readuntil(b"}"), T)
        assert status_of(first) == 200
        assert await until_closed(reader, 4) == b""


async def test_sse_and_websocket_outlive_the_header_deadline(
    settings_env: dict[str, Any],
) -> None:
    async with (
        live_hub(**settings_env, header_timeout_seconds=1) as hub,
        ws_connect(hub.ws_url("u1")) as ws,
        sse_stream(hub.url, "u1") as sse,
    ):
        assert (await recv(ws))["type"] == "hello"
        assert (await sse.event())["type"] == "hello"
        await asyncio.sleep(2.5)
        await notify(hub, "u1")
        assert (await recv(ws))["type"] == "notification.created"
        assert (await sse.event())["type"] == "notification.created"


# ---- the connection cap --------------------------------------------------------------


async def test_connections_over_the_cap_get_503_and_one_log_line_until_some_close(
    settings_env: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    async with live_hub(**settings_env, max_connections=20) as hub:
        await hub.http.aclose()  # no keep-alive connection of the fixture's own
        socks = await open_idle(hub.url, 20)
        try:
            await eventually(lambda: len(hub.server.server_state.connections) == 20)
            with caplog.at_level(logging.WARNING, logger="notifyhub"):
                for _ in range(5):
                    refused = await health(hub.url)
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"]
                    assert refused.json()["status"] == 503
            lines = [r for r in caplog.records if "HUB_MAX_CONNECTIONS" in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in lines]
        finally:
            for sock in socks:
                sock.close()
        await eventually(lambda: len(hub.server.server_state.connections) == 0)
        assert (await health(hub.url)).status_code == 200


# ---- the file-descriptor limit -------------------------------------------------------


async def test_a_cap_above_what_the_fd_limit_allows_is_logged_as_a_warning(
    settings_env: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="notifyhub"):
        async with live_hub(**settings_env, max_connections=10**9) as hub:
            assert (await hub.http.get("/health")).status_code == 200
    [line] = [r for r in caplog.records if "HUB_MAX_CONNECTIONS (1000000000)" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert any("file descriptors:" in r.getMessage() for r in caplog.records)


async def test_with_a_low_fd_limit_the_hub_raises_it_logs_it_and_refuses_with_503(
    database_url: str, tmp_path: Path,
) -> None:
    env = hub_env(database_url=database_url, jwt_secret=SECRET, data_dir=tmp_path / "data")
    env["NOTIFYHUB_TEST_NOFILE"] = "200:400"
    hub = await HubProcess(env, tmp_path / "hub.log", module="tests.abuse.lowfd").start()
    try:
        log = hub.log()
        assert "file descriptors: soft limit raised from 200 to 400" in log, log
        assert "connections capped at 290" in log, log
        # 290 held, 160 refused: more sockets than the limit, as in a flood.
        socks = await open_idle(hub.url, 450)
        try:
            # Past the cap, and past the file-descriptor limit, it still answers.
            for path in ("/health", "/ready"):
                async with httpx.AsyncClient(base_url=hub.url, timeout=T, trust_env=False) as c:
                    assert (await c.get(path)).status_code == 503
        finally:
            for sock in socks:
                sock.close()

        async def served() -> bool:
            return (await health(hub.url)).status_code == 200

        await eventually(served)
        await eventually(lambda: "refused" in hub.log())
    finally:
        await hub.stop()
    assert "Traceback" not in hub.log()
