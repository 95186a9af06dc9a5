"""The Server-Sent Events endpoint ``/api/stream`` (docs/live.md), a raw ASGI app.

Auth and resume position are checked before the response starts, so a bad request
gets a problem+json status. Opening a stream is an HTTP request, so the rate-limit
middleware has already charged it to the client address (and the credential): a
handshake flood gets 429 before it gets here. ``node.attach`` refuses a user over
``max_connections_per_user`` with RateLimited, before any database work: 429 as well.

Then the connection's outbox, which holds SSE blocks (``hub.events.sse_block``, cut by
the node once per event for all SSE connections), is written as it is, with a comment
line whenever ``heartbeat_seconds`` pass without one. The first block, ``hello``, also
carries ``retry:`` and, as its ``id:``, the position the stream continues after (the
only block written for this connection alone). The stream ends when the client leaves
or the node closes the connection (slow, expired, draining); a client that does not
take the end within the close grace (``api.closing.GRACE``) has its connection reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from api.auth import authenticate
from api.closing import GRACE, Peer, abort, peer_of
from hub.connection import Connection, parse_since
from hub.errors import Forbidden
from hub.node import Node

log = logging.getLogger("notifyhub")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE = b": keepalive\n\n"
#: The reconnection delay (ms) the stream asks EventSource clients for (3 s by default).
RETRY_MS = 1000
END = {"type": "http.response.body", "body": b"", "more_body": False}


class Stream:
    """``GET /api/stream``: resume from ``Last-Event-ID`` (wins) or ``?since=``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        principal = authenticate(request, allow_query_token=True)
        if principal.user_id is None:
            raise Forbidden("live streams are for users; use a user token")
        # A browser reconnecting sends Last-Event-ID with the URL it first used, so the
        # header is the newer position.
        header = request.headers.get("last-event-id", "").strip()
        if header:
            since = parse_since(header, "Last-Event-ID")
        else:
            since = parse_since(request.query_params.get("since"))
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        node: Node = request.app.state.node
        conn = node.connection(principal.user_id, "sse", principal.expires_at)
        await node.attach(conn, since)  # a dependency down: 503 (api.problems)
        peer = peer_of(receive, send)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            gone = await _serve(receive, send, conn, node.svc.settings.heartbeat_seconds)
        finally:
            await node.detach(conn)
        if not gone:
            await _end(receive, send, peer)


async def _end(receive: Receive, send: Send, peer: Peer | None) -> None:
    """End the stream; a client that does not take the end within the grace is reset."""
    try:
        await asyncio.wait_for(send(END), GRACE)
        return
    except TimeoutError:
        pass  # stuck behind what the client never read
    except OSError:
        return  # gone meanwhile
    if abort(peer):
        # Return once the server has seen the connection go: an unfinished response of
        # a connection still up would be logged as an application error.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_disconnected(receive), GRACE)


async def _serve(receive: Receive, send: Send, conn: Connection, heartbeat: float) -> bool:
    """Write until the client leaves (True) or the connection is closed (False)."""
    watcher = asyncio.create_task(_disconnected(receive), name="sse-disconnect")
    writer = asyncio.create_task(_write(send, conn, heartbeat), name="sse-writer")
    try:
        done, _ = await asyncio.wait(
            {watcher, writer, conn.outbox.closed_future}, return_when=asyncio.FIRST_COMPLETED
        )
        gone = watcher in done
    finally:
        watcher.cancel()
        writer.cancel()
        await asyncio.wait({watcher, writer})
    if not writer.cancelled() and writer.exception() is not None:
        log.error("sse writer failed", exc_info=writer.exception())
    return gone


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _write(send: Send, conn: Connection, heartbeat: float) -> None:
    outbox = conn.outbox
    first = True
    while True:
        try:
            async with asyncio.timeout(heartbeat):
                frame = await outbox.get()
        except TimeoutError:
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            continue
        if frame is None:
            return
        if first:
            # hello: its id is where the stream continues, so that even a reconnect before
            # the first event resumes without a gap (on a block with data: some clients,
            # eventsource@4 among them, ignore a block without), and a short retry.
            frame = b"retry: %d\nid: %d\n%s" % (RETRY_MS, conn.start_seq, frame)
            first = False
        # Otherwise already an SSE block: the node framed it for this transport.
        await send({"type": "http.response.body", "body": frame, "more_body": True})


routes: list[BaseRoute] = [Route("/api/stream", Stream(), methods=["GET"])]
