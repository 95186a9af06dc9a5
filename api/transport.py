"""HTTP transport limits: header size, header deadline, the connection cap, file descriptors.

uvicorn's httptools protocol reads a header block of any size (httptools joins a header
value in memory until it ends), waits forever for a request that never completes, and
accepts connections until ``accept()`` fails with "too many open files", after which
nothing is answered at all. ``HttpProtocol`` closes those gaps at the connection level:

- a header block (request line and headers) over ``max_header_bytes`` gets 431 and the
  connection is closed without reading further;
- a header block not complete ``header_timeout`` seconds after the connection opened (or
  after the request's first byte, on a kept-alive connection) gets 408, or is closed
  silently when nothing was sent; WebSocket upgrades and streamed responses are past
  their headers and never cut by it;
- a connection beyond ``max_connections`` open ones (WebSocket included) gets 503 at
  once and is closed, logged at most once per ``REFUSAL_LOG_SECONDS``.

uvicorn's own ``limit_concurrency`` answers 503 only once a request's headers are
complete, so connections that send nothing still pile up to the descriptor limit; the
cap here is checked when a connection is accepted, against uvicorn's set of open
connections (HTTP and WebSocket).

Per request this costs two attribute writes and one clock read; the deadline is one
timer per connection that re-arms itself at most once per deadline.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import PROBLEM_TYPE

log = logging.getLogger("notifyhub")

#: Least time between two log lines about refused connections.
REFUSAL_LOG_SECONDS = 10.0
#: Seconds a refused connection that sends nothing is kept for its 503 to be read.
REFUSAL_LINGER_SECONDS = 1.0
#: Refused connections kept open at once before ``start`` sets half the reserve.
MAX_LINGERING = 16
#: File descriptors kept for the database pool, Redis, logs and refused connections:
#: at least this many plus ``HUB_DB_POOL_MAX``, and at least a tenth of the limit.
RESERVED_FDS = 100


def _response(status: int, code: str, title: str, detail: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps(
        {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail}
    )
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
        b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
        % (status, title.encode(), len(body), extra, body)
    )


HEADERS_TOO_LARGE = _response(
    431, "headers_too_large", "Request Header Fields Too Large",
    "the request line and headers are too large",
)
HEADERS_TIMEOUT = _response(
    408, "request_timeout", "Request Timeout", "the request headers took too long"
)
TOO_MANY_CONNECTIONS = _response(
    503, "unavailable", "Service Unavailable", "too many open connections; retry later",
    b"retry-after: 5\r\n",
)


@dataclass
class TransportLimits:
    """The limits one server's HTTP connections share, and its refusal count.

    ``max_connections`` is None until ``HubServer`` starts and resolves the default
    from the file-descriptor limit (no cap until then).
    """

    max_header_bytes: int
    header_timeout: float
    max_connections: int | None = None
    db_pool_max: int = 0
    refused: int = 0
    next_refusal_log: float = 0.0
    #: Refused connections waiting for their request, and how many may at once.
    lingering: int = 0
    max_lingering: int = MAX_LINGERING

    def start(self) -> None:
        """Raise the file-descriptor limit and fix the cap; log both (INFO, one line).

        Without a configured cap it is ``default_max_connections`` of the limit.
        """
        before, after = raise_fd_limit()
        fitting = default_max_connections(after, self.db_pool_max)
        if self.max_connections is None:
            self.max_connections = fitting
        elif self.max_connections > fitting:
            log.warning(
                "HUB_MAX_CONNECTIONS (%d) is more than %d file descriptors allow (%d): "
                "past that, connections fail without an answer",
                self.max_connections, after, fitting,
            )
        self.max_lingering = max(MAX_LINGERING, (after - self.max_connections) // 2)
        limit = f"soft limit raised from {before} to {after}" if after != before else (
            f"limit {after}"
        )
        log.info("file descriptors: %s; connections capped at %d (HUB_MAX_CONNECTIONS)",
                 limit, self.max_connections)

    def refusing(self, open_connections: int, now: float) -> bool:
        """Whether a new connection, making ``open_connections``, is over the cap; logs."""
        if self.max_connections is None or open_connections <= self.max_connections:
            return False
        self.refused += 1
        if now >= self.next_refusal_log:
            log.warning(
                "refused %d connection(s) with 503: %d open, HUB_MAX_CONNECTIONS is %d",
                self.refused, open_connections - 1, self.max_connections,
            )
            self.refused = 0
            self.next_refusal_log = now + REFUSAL_LOG_SECONDS
        return True


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (see the module doc).

    Build one per server with ``http_protocol(limits)``.
    """

    limits: TransportLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop time by which the current header block must be complete; None once it is.
        self._headers_due: float | None = None
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        if self.limits.refusing(len(self.connections), now):
            # Answered before the request is read: closing with the request unread would
            # reset the connection, and the client might not read the answer; the first
            # data closes it. Past max_lingering such connections (a flood of silent
            # ones) descriptors matter more: closed at once.
            transport.write(TOO_MANY_CONNECTIONS)
            if self.limits.lingering >= self.limits.max_lingering:
                transport.close()
                return
            self.limits.lingering += 1
            self._refused = True
            self._header_timer = self.loop.call_later(REFUSAL_LINGER_SECONDS, transport.close)
            return
        self._headers_due = now + self.limits.header_timeout
        self._header_timer = self.loop.call_at(self._headers_due, self._check_headers)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._refused:
            self._refused = False
            self.limits.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self.transport.close()  # the 503 went out in connection_made
            return
        limit = self.limits.max_header_bytes
        if self._headers_due is not None and self._header_bytes + len(data) > limit:
            # Refuse before the parser buffers it, unless the block ends within the limit
            # in this read (then a body follows). A read that starts with the end of
            # "\r\n\r\n" goes to the parser, and the count after it decides.
            end = data.find(b"\r\n\r\n", 0, max(0, limit - self._header_bytes) + 4)
            if end < 0 and not data.startswith((b"\n", b"\r\n")):
                self._refuse_headers()
                return
        super().data_received(data)
        # Still inside a header block after this read: count the read whole. A read that
        # also ends an earlier request counts that request's tail too (pipelining only).
        if self._headers_due is not None:
            self._header_bytes += len(data)
            if self._header_bytes > limit and not self.transport.is_closing():
                self._refuse_headers()

    def _refuse_headers(self) -> None:
        self._headers_due = None
        self.transport.write(HEADERS_TOO_LARGE)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_due is None:
            self._headers_due = self.loop.time() + self.limits.header_timeout
            if self._header_timer is None:
                self._header_timer = self.loop.call_at(self._headers_due, self._check_headers)

    def on_headers_complete(self) -> None:
        self._headers_due = None
        self._header_bytes = 0
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport; connection_lost never comes here.
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().handle_websocket_upgrade()
        # connection_lost would drop the parser, which holds this protocol's callbacks: a
        # cycle, so this protocol (~2.5 KiB with its parser, deques and event) would wait
        # for the cyclic collector, which runs rarely (``api.server.GC_THRESHOLD``) and
        # often only after it was promoted. Nothing parses HTTP here after an upgrade.
        self.parser = None  # type: ignore[assignment]

    def _check_headers(self) -> None:
        self._header_timer = None
        due = self._headers_due
        if due is None or self.transport.is_closing():
            return
        if self.loop.time() < due:
            # A later request's deadline: wait for it with the same one timer.
            self._header_timer = self.loop.call_at(due, self._check_headers)
            return
        self._headers_due = None
        if self.headers is not None and (self.cycle is None or self.cycle.response_complete):
            # Part of a request came: say why it is dropped. Nothing came: just close.
            self.transport.write(HEADERS_TIMEOUT)
        self.transport.close()


def http_protocol(limits: TransportLimits) -> type[HttpProtocol]:
    """An ``HttpProtocol`` class bound to ``limits``, for uvicorn's ``http`` option."""
    return type("HttpProtocol", (HttpProtocol,), {"limits": limits})


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit before and after.

    An unlimited hard limit, or one the system refuses, leaves the soft limit as is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or hard == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def default_max_connections(fd_limit: int, db_pool_max: int) -> int:
    """The connection cap for ``fd_limit`` descriptors, keeping ``RESERVED_FDS`` spare."""
    reserve = max(RESERVED_FDS + db_pool_max, fd_limit // 10)
    return max(1, fd_limit - reserve)
