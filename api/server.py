"""Serving the hub under uvicorn, with a graceful drain of live connections.

On SIGTERM/SIGINT uvicorn would close WebSockets with 1012 all at once and wait
without end for SSE streams (they never finish by themselves). ``HubServer`` instead
stops accepting, closes every live connection with 1001 spread over a few seconds
(``Node.drain``), and only then lets uvicorn finish, so the process exits within
``DRAIN_SECONDS`` + ``GRACEFUL_SECONDS`` even with streams open.

``run`` is the one way to build that server around an app; ``serve_command``
(``notifyhub serve``) uses ``run`` and prints the banner once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from api import redact
from api.closing import abort_after_grace, reset_on_close
from api.failures import EXPECTED, CliError, explain
from api.transport import HttpProtocol, TransportLimits, http_protocol
from hub.settings import Settings

log = logging.getLogger("notifyhub")

#: Longest time spent closing live connections on shutdown.
DRAIN_SECONDS = 5.0
#: Allocations between young-generation collections (Python's default is 700).
GC_THRESHOLD = 50_000
#: What uvicorn then grants unfinished requests before cancelling them.
GRACEFUL_SECONDS = 2.0


class _Inbox:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Queue``, for its one reader.

    ``asyncio.Queue`` keeps three deques (~2 KiB) per connection for a queue that
    rarely holds more than one message.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Writable:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Event``, for its one sender.

    ``asyncio.Event`` keeps a deque of waiters (~750 bytes) per connection for a flag
    that is almost always set.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, lighter per idle connection.

    Its receive queue is an ``_Inbox`` and its writable flag a ``_Writable``. The
    handshake's parsed request and response (their header objects, ~4 KiB) are let go
    once the response is sent, from uvicorn and from the websockets parser; neither
    reads them afterwards (the ASGI scope keeps the headers the app reads). Keepalive
    stays uvicorn's: one timer per connection, no task.

    uvicorn's attributes are slots here: its ~37 are more than an instance dict shares
    keys for (30), so each connection had a dict of its own (~1.6 KiB); as slots they
    take 8 bytes each. One uvicorn adds later goes to the dict, as before.
    """

    __slots__ = (
        "app", "app_state", "asgi_version", "client", "close_sent", "close_timeout",
        "close_timer", "config", "conn", "connections", "curr_msg_data_type",
        "default_headers", "disconnected", "frames", "handshake_complete",
        "handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop",
        "pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout",
        "ping_timer", "pong_timer", "queue", "read_paused", "request", "response",
        "root_path", "scheme", "scope", "server", "tasks", "transport", "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Writable()  # type: ignore[assignment]

    def send_text_now(self, frame: bytes) -> bool:
        """Write ``frame`` (UTF-8 JSON) as one unmasked text frame now, if it can go now.

        False when it cannot: the transport is paused (its buffer is over the high-water
        mark), closing, or the close handshake began; or an extension (permessage-deflate)
        was negotiated, whose frames only the websockets library builds. The caller then
        queues the frame and sends it through ASGI. Frames never interleave: each
        ``transport.write`` holds whole frames, uvicorn's pings and closes included.
        """
        if (
            self.close_sent or self.conn.state is not State.OPEN or self.conn.extensions
            or not self.writable.is_set() or self.transport.is_closing()
        ):
            return False
        try:
            self.transport.write(text_frame_header(len(frame)) + frame)
        except (RuntimeError, OSError):  # the transport went away meanwhile
            return False
        return True

    def keepalive_timeout(self) -> None:
        # uvicorn closes a peer that did not answer its ping with ``transport.close()``,
        # which waits for the send buffer to drain, and the kernel then keeps trying to
        # deliver what it holds: a peer that also stopped reading would keep its socket.
        # A peer that does not answer is gone: its socket resets once closed, and the
        # close gets the grace to flush the process's buffer before it is aborted.
        if not self.close_sent and not self.transport.is_closing():
            reset_on_close(self.transport)
        super().keepalive_timeout()
        abort_after_grace(self)

    def start_keepalive(self) -> None:
        # Called right after the handshake response went out.
        self.request = self.response = None  # type: ignore[assignment]
        _restart_parser(self.conn)
        super().start_keepalive()


def text_frame_header(size: int) -> bytes:
    """The RFC 6455 header of one final, unmasked text frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def _restart_parser(conn: ServerProtocol) -> None:
    """Give ``conn`` a frame parser that does not hold the handshake request.

    ``ServerProtocol.parse`` keeps the parsed request (its headers, ~3 KiB) in a local
    for as long as the connection lives, since it goes on to parse frames in the same
    generator. A fresh ``Protocol.parse`` takes over, but only at a frame boundary
    (waiting in ``at_eof`` with nothing buffered): a client that sent part of a frame
    before the handshake response (which RFC 6455 forbids) keeps the old parser.
    """
    outer = conn.parser
    frames = getattr(outer, "gi_yieldfrom", None)
    waiting = getattr(frames, "gi_yieldfrom", None)
    if (
        getattr(frames, "gi_code", None) is not Protocol.parse.__code__
        or getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__
        or conn.reader.buffer
    ):
        return
    conn.parser = Protocol.parse(conn)
    next(conn.parser)
    outer.close()


def server_config(
    app: Any, host: str, port: int, settings: Settings, **overrides: Any
) -> uvicorn.Config:
    """uvicorn settings for notifyhub: HTTP transport limits (``api.transport``),
    WebSocket limits and keepalive from ``settings``."""
    limits = TransportLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        max_connections=settings.max_connections,
        db_pool_max=settings.db_pool_max,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "lifespan": "on",
        # Not detected: the app's __call__ returns its coroutine (see GuardedLifespan).
        "interface": "asgi3",
        "http": http_protocol(limits),
        # Only after a response; a connection's first request has the header deadline.
        "timeout_keep_alive": settings.keepalive_seconds,
        "ws": WebSocketProtocol,
        "ws_max_size": settings.ws_max_frame_bytes,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # Protocol-level pings find dead WebSocket peers; SSE has its comment lines.
        "ws_ping_interval": settings.heartbeat_seconds,
        "ws_ping_timeout": settings.heartbeat_seconds,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class HubServer(uvicorn.Server):
    """uvicorn's server that drains ``app.state.runtime`` before its own shutdown.

    ``app`` is the notifyhub Starlette app (the runtime lives in its state), even when
    ``config.app`` wraps it. ``on_ready(port)`` runs once the lifespan has started and the
    socket is bound. SIGTERM/SIGINT shut it down and ``run`` returns normally.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: Starlette,
        drain_seconds: float = DRAIN_SECONDS,
        on_ready: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.hub_app = app
        self.drain_seconds = drain_seconds
        self.on_ready = on_ready

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # Before the socket is bound: the cap is derived from the raised limit.
        protocol = self.config.http
        if isinstance(protocol, type) and issubclass(protocol, HttpProtocol):
            protocol.limits.start()
        await super().startup(sockets=sockets)
        # Everything loaded so far (modules, settings, pools) lives as long as the process:
        # keep it out of every future collection, and collect the young generation less
        # often, since each live frame allocates a few short-lived objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        # Startup ran the lifespan (migrations, pool, broker) and bound the socket, so a
        # script that waits for the banner can connect as soon as it appears.
        if self.started and self.on_ready is not None:
            self.on_ready(self.port)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after shutting down, so the process would die of
        # it; a hub that shut down cleanly exits 0 instead.
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so drained clients reconnect to another instance.
        for server in getattr(self, "servers", []):
            server.close()
        for sock in sockets or []:
            sock.close()
        runtime = getattr(self.hub_app.state, "runtime", None)
        if runtime is not None and not self.force_exit:
            # Ingest stops reading now and settles its batch while connections drain, so
            # its grace overlaps the drain and the process still exits within its 10 s.
            await runtime.drain(self.drain_seconds)
        await super().shutdown(sockets=sockets)


class GuardedLifespan:
    """Wraps the app so a failing startup or shutdown is kept for one line, no traceback.

    Other scopes go to the app as they are: ``__call__`` returns the app's awaitable
    rather than awaiting it, so no frame of this wrapper stays with every live
    connection (``server_config`` tells uvicorn it is ASGI 3).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            return self.app(scope, receive, send)
        return self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_without_traceback(message: Any) -> None:
            # Starlette puts the formatted traceback in the message and uvicorn logs it.
            if message["type"].endswith(".failed"):
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, send_without_traceback)
        except Exception as exc:
            self.error = exc
            if not isinstance(exc, EXPECTED):
                log.error("lifespan failed", exc_info=exc)


class ServeFailed(Exception):
    """The hub could not start, listen or shut down cleanly; ``__cause__`` says why."""


def run(
    app: Starlette,
    host: str,
    port: int,
    settings: Settings,
    *,
    on_ready: Callable[[int], None] | None = None,
    **overrides: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain and stop; ``ServeFailed`` on failure.

    Runs its own event loop (uvloop when installed, as uvicorn chooses).
    """
    server, guard = _hub_server(app, host, port, settings, on_ready, overrides)
    with _reporting_failure(guard, host, port):
        server.run()


def _hub_server(
    app: Starlette,
    host: str,
    port: int,
    settings: Settings,
    on_ready: Callable[[int], None] | None,
    overrides: dict[str, Any],
) -> tuple[HubServer, GuardedLifespan]:
    guard = GuardedLifespan(app)
    config = server_config(guard, host, port, settings, **overrides)
    return HubServer(config, app, on_ready=on_ready), guard


@contextlib.contextmanager
def _reporting_failure(guard: GuardedLifespan, host: str, port: int) -> Iterator[None]:
    try:
        yield
    except SystemExit:
        # uvicorn exits this way when the lifespan failed or the port cannot be bound.
        if guard.error is not None:
            raise ServeFailed("cannot start") from guard.error
        raise ServeFailed(f"cannot listen on {_url(host, port)}") from None
    if guard.error is not None:
        raise ServeFailed("shutdown failed") from guard.error


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub serve``: run the hub until SIGTERM/SIGINT; the banner once it listens."""
    if settings.demo_mode and not is_loopback(args.host):
        raise CliError(
            f"demo mode (no HUB_JWT_SECRET or HUB_JWT_PUBLIC_KEY) listens on loopback only; "
            f"set HUB_JWT_SECRET to listen on {args.host}",
            2,
        )
    from api.app import create_app

    try:
        run(
            create_app(settings),
            args.host,
            args.port,
            settings,
            on_ready=lambda port: print_banner(settings, args.host, port),
            log_config=None,  # logging.basicConfig in api.cli formats uvicorn's records too
            log_level=logging.getLogger().level,
            access_log=args.access_log,
        )
    except ServeFailed as exc:
        cause = exc.__cause__
        raise CliError(f"{exc}: {explain(cause)}" if cause else str(exc)) from None
    log.info("stopped")
    return 0


def print_banner(settings: Settings, host: str, port: int) -> None:
    """Print where the hub listens, its database and broker (passwords masked)."""
    address = _url(host, port)
    if settings.database_url:
        database = mask_url(settings.database_url)
        if settings.database_pooler == "transaction":
            database += " (through a pooler in transaction mode)"
    else:
        database = f"embedded PostgreSQL in {settings.data_dir / 'pgdata'}"
    broker = mask_url(settings.redis_url) if settings.redis_url else "in-process"
    lines = [f"notifyhub listening on {address}", f"database: {database}", f"broker: {broker}"]
    if settings.demo_mode:
        lines.append(f"demo mode: open {address}/ (tokens from /demo/token)")
    print("\n".join(lines), flush=True)


def mask_url(url: str) -> str:
    """``url`` with its secrets as ``***`` (the rule of ``api.redact.mask_url``)."""
    return redact.mask_url(url)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
