"""The WebSocket endpoint ``/ws`` (docs/live.md): admission, then one reader and one writer.

Refusals happen after the handshake (accept, then close at once with 4401/4403/4400,
or 4429 when the address is over its budget or the user has too many connections)
because a browser never sees the status of a refused handshake, only a close code.
The writer (in the endpoint's own task) drains the connection's outbox; the reader (one
task) answers client frames. When either ends, or the node closes the outbox (slow,
expired, draining), both stop. From that close the client has the close grace
(``api.closing.GRACE``) to take its close frame; then the transport is aborted, even
while the writer is still blocked on a client that stopped reading.

Write frames (``message.send``, ``notifications.mark_read``) are charged to the app's
shared write limiter under ``user_key``, the budget REST writes of the same user spend.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.auth import authenticate
from api.closing import GRACE, Peer, abort_after_grace, peer_of
from api.errors import DOWN, answer_for
from api.jsonio import parse
from api.ratelimit import address_key, user_key
from api.server import WebSocketProtocol
from hub import errors, messages, notifications
from hub.connection import Close, Connection, Verdict, parse_since
from hub.events import encode, user_channel
from hub.models import MarkRead, MessageSend, Strict, UserId
from hub.node import Node
from hub.ratelimit import Bucket, RateLimiter

log = logging.getLogger("notifyhub")

#: At most one typing frame per connection per this many seconds; extra ones are dropped.
TYPING_INTERVAL = 0.5
PONG = encode("pong", None, {})
#: Client frames that change state: they spend the user's write budget, as REST writes do.
WRITE_FRAMES = frozenset({"message.send", "notifications.mark_read"})


class Typing(Strict):
    to: UserId


class Admission(NamedTuple):
    user_id: str
    expires_at: float | None
    since: int | None


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    """An ``error`` frame; ``extra`` adds fields such as ``client_id`` or ``errors``."""
    return encode("error", None, {"code": code, "message": message, **extra})


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """A missing Origin (non-browser client), the hub's own, or one of ``allowed``.

    Same origin compares host and port with the Host header, not the scheme: behind a
    TLS-terminating proxy the hub sees ws:// while the page is https://.
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed or origin in {o.strip().lower().rstrip("/") for o in allowed}:
        return True
    if not host:
        return False
    page, server = urlsplit(origin), urlsplit("//" + host.strip().lower())
    if page.scheme not in ("http", "https") or not page.hostname:
        return False
    default = 443 if page.scheme == "https" else 80
    try:
        return page.hostname == server.hostname and (page.port or default) == (
            server.port or default
        )
    except ValueError:  # a port that is not a number
        return False


def _admit(websocket: WebSocket) -> Admission | tuple[int, str]:
    """An Admission to go ahead, or ``(code, reason)`` to refuse."""
    state = websocket.app.state
    settings = state.settings
    # The address first, before any token check or database work, exactly like REST:
    # a loop of handshakes (with or without valid tokens) is stopped here.
    allowed, retry = state.ip_limiter.allow(address_key(websocket.scope))
    if not allowed:
        wait = max(1, math.ceil(retry))
        return Close.TOO_MANY, f"too many connection attempts; retry in {wait} s"
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), headers.get("host"), settings.allowed_origins):
        return Close.FORBIDDEN, "origin not allowed"
    try:
        principal = authenticate(websocket, allow_query_token=True)
    except errors.Unauthorized as exc:
        return _refusal(exc)
    if principal.user_id is None:
        return Close.FORBIDDEN, "live connections are for users; use a user token"
    try:
        since = parse_since(websocket.query_params.get("since"))
    except errors.InvalidInput as exc:
        return _refusal(exc)
    return Admission(principal.user_id, principal.expires_at, since)


def _refusal(exc: Exception, reason: str | None = None) -> tuple[int, str]:
    """The close code (``api.errors``) and reason that refuse a connection for ``exc``."""
    code = answer_for(exc).close
    assert code is not None, f"{type(exc).__name__} does not refuse connections"
    detail = exc.detail if isinstance(exc, errors.HubError) else str(exc)
    return code, (reason or detail)[:120]


async def live(websocket: WebSocket) -> None:
    """``GET /ws``: admit, attach to the node, run reader and writer, close with the code."""
    node: Node = websocket.app.state.node
    admitted = _admit(websocket)
    try:
        await websocket.accept()
    except (WebSocketDisconnect, OSError):
        return  # the client left during the handshake
    if not isinstance(admitted, Admission):
        await _close(websocket, *admitted)
        return
    _forget_handshake(websocket)
    conn = node.connection(admitted.user_id, "ws", admitted.expires_at)
    try:
        await node.attach(conn, admitted.since)
    except errors.RateLimited as exc:  # the per-user cap, checked before any database work
        await _close(websocket, *_refusal(exc))
        return
    except DOWN as exc:
        log.warning("live connection for %s refused: %s", admitted.user_id, exc)
        await _close(websocket, *_refusal(exc, "unavailable; reconnect with since"))
        return
    except Exception:
        log.exception("live connection for %s failed", admitted.user_id)
        await _close(websocket, Close.INTERNAL, "internal error")
        return
    try:
        gone = await _serve(websocket, node, conn)
        if node.draining and conn.outbox.close_code is not None and not gone:
            # Close before detach while draining: drain() returns once the registry is
            # empty and uvicorn's own shutdown then fails every socket still open with
            # 1012, so a detach that awaits (a Redis UNSUBSCRIBE) let 1012 beat our 1001.
            await _close(websocket, conn.outbox.close_code, conn.outbox.close_reason)
    finally:
        code, reason = conn.outbox.close_code, conn.outbox.close_reason
        await node.detach(conn)
    if code is not None and not gone:
        await _close(websocket, code, reason)


def _forget_handshake(websocket: WebSocket) -> None:
    """Let go of what only admission reads: the handshake's headers and query string.

    The scope lives as long as the connection; its header list (and the parsed copies
    Starlette caches on ``websocket``) is ~1.5 KiB per idle connection otherwise.
    """
    websocket.scope["headers"] = []
    websocket.scope["query_string"] = b""
    for cached in ("_headers", "_query_params", "_url"):
        websocket.__dict__.pop(cached, None)


async def _serve(websocket: WebSocket, node: Node, conn: Connection) -> bool:
    """Write in this task and read in one other until either ends or the outbox closes.

    True if the client left (its disconnect ended the reader). One task per connection
    beside the ASGI one, not two: at 50,000 connections every task counts.
    """
    # However the connection ends, its transport is aborted if still up after the grace:
    # a writer blocked on a client that stopped reading is released that way.
    peer = peer_of(websocket._send)
    conn.outbox.closed_future.add_done_callback(lambda _: abort_after_grace(peer))
    reader = asyncio.create_task(_read(websocket, node, conn), name="ws-reader")
    # The reader ending (the client left, a frame too big, a flood) must end the writer.
    reader.add_done_callback(lambda _: conn.close(Close.NORMAL))
    try:
        await _write(websocket, conn, peer)
    except Exception:
        log.exception("websocket writer failed")
    finally:
        reader.cancel()
        await asyncio.wait({reader})
    if reader.cancelled():
        return False
    if reader.exception() is not None:
        log.error("websocket reader failed", exc_info=reader.exception())
        return False
    return bool(reader.result())


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close unless the client is already gone; never wait long on one that does not read."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    try:
        await asyncio.wait_for(websocket.close(code, reason), GRACE)
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        pass  # gone, or never reading (then its transport is aborted, see _serve)


async def _write(websocket: WebSocket, conn: Connection, peer: Peer | None) -> None:
    """Send what the outbox holds, in order, until it closes.

    With uvicorn's protocol as ``api.server`` configures it, a frame goes out by one
    synchronous write (``send_text_now``), and the outbox writes fan-out frames itself
    while this task waits with nothing queued; ASGI's ``send`` is the way when that
    cannot be (the transport paused, permessage-deflate, another server).
    """
    outbox = conn.outbox
    now = peer.send_text_now if isinstance(peer, WebSocketProtocol) else None
    outbox.sink = now
    try:
        while (frame := await outbox.get()) is not None:
            if now is None or not now(frame):
                await websocket.send_text(frame.decode())
            # Not held while waiting for the next one: an idle connection keeps no frame.
            del frame
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client left, or uvicorn already closed the socket (e.g. 1009)
    finally:
        outbox.sink = None


async def _read(websocket: WebSocket, node: Node, conn: Connection) -> bool:
    """Answer client frames; True once the client left, False if the connection closed."""
    settings = websocket.app.state.settings
    limit: int = settings.ws_max_frame_bytes
    bucket = Bucket(settings.ws_frames_per_second, settings.ws_frames_burst)
    commands = _Commands(node, conn, websocket.app.state.write_limiter)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return True
        raw: str | bytes = message.get("text") or message.get("bytes") or b""
        if _size(raw, limit) > limit:
            conn.close(Close.TOO_BIG, "frame too large")
            return False
        allowed, retry_after = bucket.allow()
        if allowed:
            reply = await commands.handle(raw)
        elif bucket.refused > bucket.burst:
            # Told why before the close, even if earlier replies were still queued.
            conn.close(Close.POLICY, "too many frames", last=error_frame(
                "rate_limited", "too many frames; closing", retry_after=round(retry_after, 3)
            ))
            return False
        else:
            reply = error_frame("rate_limited", "too many frames; slow down",
                                retry_after=round(retry_after, 3), **_client_id(raw))
        if reply is not None and conn.send(reply) is not Verdict.DELIVERED:
            node.slow(conn)
            return False


def _size(raw: str | bytes, limit: int) -> int:
    if isinstance(raw, bytes) or len(raw) * 4 <= limit:
        return len(raw)  # a str of n characters is at most 4n bytes of UTF-8
    return len(raw.encode())


def _client_id(raw: str | bytes | dict[str, Any]) -> dict[str, str]:
    """``{"client_id": ...}`` of a frame that has a string one, else ``{}``."""
    if isinstance(raw, dict):
        frame: Any = raw
    else:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
    client_id = frame.get("client_id") if isinstance(frame, dict) else None
    return {"client_id": client_id} if isinstance(client_id, str) else {}


class _Commands:
    """Answers one connection's client frames; each handler returns the reply, if any."""

    def __init__(self, node: Node, conn: Connection, write_limiter: RateLimiter) -> None:
        self.svc = node.svc
        self.user_id = conn.user_id
        self.write_limiter = write_limiter
        self.typed_at = float("-inf")

    async def handle(self, raw: str | bytes) -> bytes | None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error_frame("invalid_json", "the frame is not valid JSON")
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return error_frame("invalid_frame", 'a frame is a JSON object with a string "type"')
        kind = frame["type"]
        extra = _client_id(frame)
        handler = HANDLERS.get(kind)
        if handler is None:
            return error_frame("unknown_type", f"unknown frame type {kind[:100]!r}", **extra)
        if kind in WRITE_FRAMES:
            # Charged before validation, as a REST write is charged before its body is read.
            allowed, retry_after = self.write_limiter.allow(user_key(self.user_id))
            if not allowed:
                return error_frame("rate_limited", "too many changes; slow down",
                                   retry_after=round(retry_after, 3), **extra)
        data = frame.get("data")
        try:
            if data is not None and not isinstance(data, dict):
                raise errors.InvalidInput('"data" must be a JSON object')
            reply: bytes | None = await handler(self, frame, data or {}, extra)
            return reply
        except errors.InvalidInput as exc:
            return error_frame("invalid_input", exc.detail, errors=exc.errors, **extra)
        except errors.HubError as exc:
            return error_frame(answer_for(exc).code, exc.detail, **extra)
        except DOWN as exc:
            log.warning("websocket %s failed: %s", kind, exc)
            return error_frame("unavailable", "the database is unavailable; retry", **extra)
        except Exception:
            log.exception("websocket %s failed", kind)
            return error_frame("internal", "an unexpected error occurred", **extra)

    async def ping(self, frame: dict[str, Any], data: dict[str, Any], extra: Any) -> bytes:
        return PONG

    async def message_send(self, frame: dict[str, Any], data: dict[str, Any], extra: Any) -> bytes:
        fields = dict(data)
        if "client_id" in frame:
            fields["client_id"] = frame["client_id"]
        body = parse(MessageSend, fields)
        message, _ = await messages.send(self.svc, self.user_id, body)
        # message.created reaches both parties through their event logs, as for REST.
        return encode("ack", None, {"client_id": body.client_id, "message": message})

    async def mark_read(
        self, frame: dict[str, Any], data: dict[str, Any], extra: dict[str, str]
    ) -> bytes | None:
        body = parse(MarkRead, data)
        result = await notifications.mark_read(self.svc, self.user_id, body.ids)
        # notifications.read arrives through the log; an ack only when a client_id asks.
        return encode("ack", None, {**extra, **result}) if extra else None

    async def typing(self, frame: dict[str, Any], data: dict[str, Any], extra: Any) -> None:
        to = parse(Typing, data).to
        if to == self.user_id:
            raise errors.InvalidInput("typing goes to the other party, not yourself")
        now = time.monotonic()
        if now - self.typed_at < TYPING_INTERVAL:
            return
        self.typed_at = now
        try:
            await self.svc.broker.publish(
                user_channel(to), encode("typing", None, {"user_id": self.user_id})
            )
        except Exception as exc:  # ephemeral: a lost typing indicator is harmless
            log.debug("typing publish failed: %s", exc)


HANDLERS: dict[str, Any] = {
    "ping": _Commands.ping,
    "message.send": _Commands.message_send,
    "notifications.mark_read": _Commands.mark_read,
    "typing": _Commands.typing,
}

PATH = "/ws"
#: ``api.app.Hub`` sends ``/ws`` handshakes to ``live`` before its middleware; the route
#: stays for anything that looks routes up (``url_path_for``).
routes: list[BaseRoute] = [WebSocketRoute(PATH, live)]
