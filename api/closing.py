"""The close grace of live connections: a client that does not read is cut off.

When the hub ends a live connection (too slow, token expired, draining, a dependency
down), what it still has to send – the WebSocket close frame, the end of the SSE
stream – waits behind everything already queued for that client. A client that stopped
reading (a vanished phone, a stalled proxy, an attacker) would never take it, and an
orderly close waits for the queue to flush: the socket would stay open for good, with
megabytes in its kernel send queue. So the close gets ``GRACE`` seconds; then the
connection is reset (RST): what was queued for it, in the process and in the kernel,
is dropped and the socket is gone.

ASGI has no message for an abort, so it is done on uvicorn's own objects: its
``receive``/``send`` callables are methods of the WebSocket protocol or of the HTTP
request cycle, which hold the asyncio transport (``transport``) and know whether the
connection is already lost (``disconnected``). Under a server without them the close
stays orderly (``peer_of`` returns None, logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any, Protocol

log = logging.getLogger("notifyhub")

#: Seconds the hub waits, from closing a live connection, for its client to read the
#: close before the transport is aborted (docs/live.md).
GRACE = 5.0
#: SO_LINGER on, 0 s: close() resets the connection and drops the kernel send queue.
_RESET = struct.pack("ii", 1, 0)
_warned = False


class Peer(Protocol):
    """What uvicorn's connection objects offer: their transport, and whether it is lost."""

    transport: asyncio.Transport
    disconnected: bool


def peer_of(*channels: Any) -> Peer | None:
    """The server object behind an ASGI ``receive`` or ``send`` of one connection."""
    global _warned
    for channel in channels:
        owner = getattr(channel, "__self__", None)
        if hasattr(owner, "disconnected") and hasattr(getattr(owner, "transport", None), "abort"):
            return owner
    if not _warned:
        _warned = True
        log.warning("this server's connections cannot be aborted: a live client that "
                    "stops reading keeps its socket until the operating system drops it")
    return None


def abort(peer: Peer | None) -> bool:
    """Reset ``peer``'s connection unless it is already lost; True if this call did.

    SO_LINGER is set only while the connection is still up: once it is lost its file
    descriptor may already belong to another connection.
    """
    if peer is None or peer.disconnected:
        return False
    reset_on_close(peer.transport)
    peer.transport.abort()
    return True


def reset_on_close(transport: asyncio.BaseTransport) -> None:
    """Make closing ``transport``'s socket reset the connection, dropping its send queue.

    Only for a transport that is still open (its descriptor is still its own).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)


def abort_after_grace(peer: Peer | None) -> asyncio.TimerHandle | None:
    """Abort ``peer``'s connection ``GRACE`` seconds from now, if it is still up then."""
    if peer is None:
        return None
    return asyncio.get_running_loop().call_later(GRACE, abort, peer)
