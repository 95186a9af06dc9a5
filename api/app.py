"""The app factory: routes, middleware, and a lifespan that opens the ``Runtime``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from api import (
    announcements,
    contacts,
    messages,
    notifications,
    ops,
    pages,
    presence,
    sse,
    templates,
    ws,
)
from api import push as push_routes
from api import unsubscribe as unsubscribe_routes
from api.problems import HANDLERS, CatchAll
from api.ratelimit import RateLimitMiddleware
from hub.ratelimit import RateLimiter
from hub.runtime import Runtime
from hub.settings import Settings
from hub.tokens import Tokens

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _returns_coroutine(method: _Method) -> _Method:
    """``method``, which returns a coroutine, marked so that ``inspect`` and ``asyncio``
    take it for a coroutine function."""
    if sys.version_info >= (3, 12):
        return inspect.markcoroutinefunction(method)
    method._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return method


class Hub(Starlette):
    """The Starlette app, with ``/ws`` handshakes sent straight to ``ws.live``.

    A live connection runs as long as its client stays, and every middleware and
    routing layer it passes through keeps its frame and closures alive that long
    (~5 KiB per idle connection). None of them acts on a WebSocket scope except
    ``LoopbackHosts`` (demo mode), so that one check is made here, as it does it:
    a close before accept, 4403. The address budget is spent in ``ws.live`` itself.

    For the same reason ``__call__`` is not a coroutine function: it returns the
    coroutine to await (``ws.live``'s, Starlette's), so no frame of its own stays
    with the connection. It is marked as one (``_returns_coroutine``), so a server
    that tells ASGI 2 from 3 by looking (uvicorn and its gunicorn worker, run
    without ``notifyhub serve``) takes the app for ASGI 3.
    """

    def __init__(self, *args: Any, loopback_only: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loopback_only = loopback_only

    @_returns_coroutine
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        if scope["type"] == "websocket" and _route_path(scope) == ws.PATH:
            scope["app"] = self
            host = ops.host_name(Headers(scope=scope).get("host", ""))
            if self.loopback_only and host not in ops.LOOPBACK_HOSTS:
                return _refuse_host(send)
            return ws.live(WebSocket(scope, receive, send))
        return super().__call__(scope, receive, send)


async def _refuse_host(send: Send) -> None:
    await send({"type": "websocket.close", "code": 4403})


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def create_app(settings: Settings) -> Starlette:
    """A notifyhub ASGI app for ``settings``; its ``Runtime`` opens in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Runtime(settings) as runtime:
            app.state.runtime = runtime  # api/server.py drains it at SIGTERM
            app.state.services = runtime.services
            app.state.node = runtime.node
            app.state.ingest = runtime.ingest
            yield

    routes: list[BaseRoute] = [
        *notifications.routes,
        *messages.routes,
        *presence.routes,
        *announcements.routes,
        *templates.routes,
        *contacts.routes,
        *push_routes.routes,
        *unsubscribe_routes.routes,
        *ops.routes,
        *ws.routes,
        *sse.routes,
        *pages.routes,
    ]
    if settings.demo_mode:
        routes.extend(ops.demo_routes)
    tokens = Tokens(settings)
    # Shared with ws.py and sse.py (app.state): live handshakes spend the address budget,
    # WebSocket write frames the user's write budget, exactly as REST requests do.
    ip_limiter = RateLimiter(settings.rate_limit_ip_per_second, settings.rate_limit_ip_burst)
    write_limiter = RateLimiter(
        settings.rate_limit_writes_per_second, settings.rate_limit_writes_burst
    )
    middleware = [
        Middleware(ops.HttpMetrics),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Last-Event-ID"],
        ),
        # Inside CORS (a browser can read the 429) and inside metrics (refusals counted).
        Middleware(
            RateLimitMiddleware,
            limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
            write_limiter=write_limiter,
            ip_limiter=ip_limiter,
            api_key_limiter=RateLimiter(
                settings.rate_limit_api_key_per_second, settings.rate_limit_api_key_burst
            ),
            api_keys=settings.api_keys,
            tokens=tokens,
        ),
        Middleware(CatchAll),
    ]
    if settings.demo_mode:
        middleware.insert(0, Middleware(ops.LoopbackHosts))
    app = Hub(
        loopback_only=settings.demo_mode,
        routes=routes,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.ip_limiter = ip_limiter
    app.state.write_limiter = write_limiter
    return app
