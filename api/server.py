"""Running the app under uvicorn with a graceful drain of live connections.

On SIGTERM/SIGINT uvicorn would close WebSockets with 1012 all at once and wait
without end for SSE streams (they never finish by themselves). ``HubServer`` instead
stops accepting, closes every live connection with 1001 spread over a few seconds
(``Node.drain``), and only then lets uvicorn finish, so the process exits within
``DRAIN_SECONDS`` + ``GRACEFUL_SECONDS`` even with streams open.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette

from hub.settings import Settings

#: Longest time spent closing live connections on shutdown.
DRAIN_SECONDS = 5.0
#: What uvicorn then grants unfinished requests before cancelling them.
GRACEFUL_SECONDS = 2.0


def server_config(
    app: Any, host: str, port: int, settings: Settings, **overrides: Any
) -> uvicorn.Config:
    """uvicorn settings for notifyhub: WebSocket limits and keepalive from ``settings``."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "lifespan": "on",
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
    """uvicorn's server that drains ``app.state.node`` before its own shutdown.

    ``app`` is the notifyhub Starlette app (the node lives in its state), even when
    ``config.app`` wraps it.
    """

    def __init__(
        self, config: uvicorn.Config, app: Starlette, drain_seconds: float = DRAIN_SECONDS
    ) -> None:
        super().__init__(config)
        self.hub_app = app
        self.drain_seconds = drain_seconds

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so drained clients reconnect to another instance.
        for server in getattr(self, "servers", []):
            server.close()
        for sock in sockets or []:
            sock.close()
        node = getattr(self.hub_app.state, "node", None)
        ingest = getattr(self.hub_app.state, "ingest", None)
        if not self.force_exit:
            # Ingest stops reading now (other instances take new entries) and settles its
            # batch while connections drain, so its grace overlaps the drain and the
            # process still exits within its 10 s.
            await asyncio.gather(
                *([node.drain(self.drain_seconds)] if node is not None else []),
                *([ingest.stop()] if ingest is not None else []),
            )
        await super().shutdown(sockets=sockets)


async def serve(app: Starlette, host: str, port: int, settings: Settings, **overrides: Any) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain and stop."""
    await HubServer(server_config(app, host, port, settings, **overrides), app).serve()


def run(app: Starlette, host: str, port: int, settings: Settings, **overrides: Any) -> None:
    """``serve`` in a fresh event loop (uvloop when installed, as uvicorn chooses)."""
    HubServer(server_config(app, host, port, settings, **overrides), app).run()
