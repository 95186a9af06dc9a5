"""``/ws`` handshakes skip the middleware (``api.app.Hub``): the checks that still apply,
and what an admitted connection no longer holds from its handshake."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import struct
from typing import Any

import orjson
import uvicorn
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from api.app import Hub
from api.server import GuardedLifespan, WebSocketProtocol, _restart_parser
from api.transport import HttpProtocol
from tests.conftest import make_token
from tests.live.conftest import LiveHub, T, closed_code, live_hub, ws_connect


def _upgrade(host: str, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _masked_text(payload: bytes) -> bytes:
    """One client text frame (masked, as RFC 6455 requires of clients); < 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


async def _status_line(port: int, host: str, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_upgrade(host, path))
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), T)
    finally:
        writer.close()


def _protocols(hub: LiveHub) -> list[WebSocketProtocol]:
    connections = hub.server.server_state.connections
    return [p for p in connections if isinstance(p, WebSocketProtocol)]


async def test_demo_mode_refuses_a_ws_handshake_addressed_to_another_host_name(
    settings_env: dict[str, Any],
) -> None:
    demo = {k: v for k, v in settings_env.items() if k != "jwt_secret"}
    async with live_hub(**demo) as hub:
        assert hub.app.state.settings.demo_mode
        token = (await hub.http.get("/demo/token", params={"user_id": "u1"})).json()["token"]
        path = f"/ws?token={token}"
        for host in ("evil.example:8013", "127.0.0.1.evil.example"):
            # Closed before accept, as LoopbackHosts does: uvicorn answers 403.
            assert (await _status_line(hub.port, host, path)).startswith(b"HTTP/1.1 403"), host
        for host in (f"localhost:{hub.port}", f"127.0.0.1:{hub.port}", f"[::1]:{hub.port}"):
            assert (await _status_line(hub.port, host, path)).startswith(b"HTTP/1.1 101"), host


async def test_configured_mode_accepts_a_ws_handshake_for_any_host_name(hub: LiveHub) -> None:
    path = f"/ws?token={make_token('u1')}"
    assert (await _status_line(hub.port, "hub.example.com", path)).startswith(b"HTTP/1.1 101")


async def test_an_admitted_connection_keeps_no_handshake_headers(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
        [protocol] = _protocols(hub)
        # uvicorn's copies, and the request the websockets parser kept in its frame.
        assert protocol.request is None and protocol.response is None
        assert protocol.conn.parser.gi_code is Protocol.parse.__code__
        assert protocol.scope["headers"] == [] and protocol.scope["query_string"] == b""
        # Every attribute uvicorn set is a slot: no instance dict per connection.
        assert vars(protocol) == {}
        # The connection still answers frames through the fresh parser.
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "pong"


async def test_the_upgraded_http_protocol_is_freed_without_the_cyclic_collector(
    hub: LiveHub,
) -> None:
    gc.disable()
    try:
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
            [protocol] = _protocols(hub)
            # gc.get_objects also lists garbage the collector has not freed yet.
            upgraded = [o for o in gc.get_objects()
                        if isinstance(o, HttpProtocol) and o.transport is protocol.transport]
            assert upgraded == []
    finally:
        gc.enable()


def _opened(sent_with_request: bytes) -> ServerProtocol:
    """A sans-I/O server that got a handshake request (and ``sent_with_request``), and
    sent its 101, as uvicorn does just before ``start_keepalive``."""
    conn = ServerProtocol()
    conn.receive_data(_upgrade("hub.example", "/ws") + sent_with_request)
    [request] = [e for e in conn.events_received() if isinstance(e, Request)]
    conn.send_response(conn.accept(request))
    return conn


async def test_a_trusted_proxy_s_forwarded_client_and_scheme_reach_the_ws_scope(
    hub: LiveHub,
) -> None:
    # uvicorn's proxy headers middleware still runs in front of the app, which now
    # returns its coroutine rather than awaiting it (Hub).
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    async with ws_connect(hub.ws_url("u1"), additional_headers=forwarded) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
        [protocol] = _protocols(hub)
        assert protocol.scope["client"] == ("203.0.113.7", 0)
        assert protocol.scope["scheme"] == "wss"


async def test_a_live_connection_keeps_no_frame_of_the_app_s_own_call(hub: LiveHub) -> None:
    # Hub.__call__ hands uvicorn ws.live's coroutine: the chain the connection's task
    # awaits goes from uvicorn's middleware straight to the session.
    async with ws_connect(hub.ws_url("u1")) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
        [protocol] = _protocols(hub)
        [task] = [t for t in protocol.tasks
                  if t.get_coro().cr_frame.f_locals.get("self") is protocol]
        chain, coro = [], task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            chain.append(coro.cr_code.co_qualname)
            coro = coro.cr_await
    assert "live" in chain and "Hub.__call__" not in chain, chain


async def test_the_lifespan_guard_hands_other_scopes_the_app_s_own_awaitable() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    for kind in ("http", "websocket"):
        awaitable = GuardedLifespan(app)({"type": kind}, None, None)
        assert getattr(awaitable, "cr_code", None) is app.__code__
        await awaitable


def test_uvicorn_alone_takes_the_app_for_asgi_3() -> None:
    # Hub.__call__ returns its coroutine (no frame per connection); a server that
    # looks, as uvicorn does without ``notifyhub serve``, must not take it for ASGI 2.
    config = uvicorn.Config(Hub(routes=[]))
    config.load()
    assert config.interface == "asgi3"


def test_the_frame_parser_is_restarted_without_the_request_at_a_frame_boundary() -> None:
    conn = _opened(b"")
    _restart_parser(conn)
    assert conn.parser.gi_code is Protocol.parse.__code__
    conn.receive_data(_masked_text(b"hi"))
    assert [e.data for e in conn.events_received() if isinstance(e, Frame)] == [b"hi"]


def test_a_frame_begun_before_the_101_keeps_the_old_parser() -> None:
    # RFC 6455 forbids it, but a client may send part of a frame with its request: the
    # parser is mid-frame, so replacing it would lose those bytes.
    frame = _masked_text(b"hi")
    conn = _opened(frame[:4])
    old = conn.parser
    _restart_parser(conn)
    assert conn.parser is old
    conn.receive_data(frame[4:])
    assert [e.data for e in conn.events_received() if isinstance(e, Frame)] == [b"hi"]


async def test_the_handshake_address_budget_still_applies_without_the_middleware(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(
        **settings_env, rate_limit_ip_burst=1, rate_limit_ip_per_second=0.001
    ) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert await closed_code(ws) == 4429
