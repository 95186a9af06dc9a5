"""Operational routes (health, readiness, metrics, OpenAPI), the demo token route, and
the HTTP metrics middleware. None of them needs credentials."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import answer_for
from api.jsonio import json_response, query_bool
from api.openapi import document
from api.problems import problem
from db.pool import Pool, ping
from hub.errors import InvalidInput
from hub.models import USER_ID_RULE, valid_user_id

#: How long ``/ready`` waits for ``SELECT 1`` before calling the database down, so a
#: database that accepts connections but never answers gets its 503 within 2 s.
DB_CHECK_TIMEOUT = 1.5
#: Lifetime of ``/demo/token`` tokens; the demo page fetches a new one when it expires.
DEMO_TOKEN_TTL = 3600
#: The route label of requests that matched no route, so scanners cannot grow the labels.
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    svc = request.app.state.services
    database = await database_ok(svc.pool)
    broker = svc.broker.healthy
    svc.metrics.broker_healthy.set(1 if broker else 0)
    body = {"database": "ok" if database else "down", "broker": "ok" if broker else "down"}
    return json_response(body, status=200 if database and broker else 503)


async def database_ok(pool: Pool, timeout: float = DB_CHECK_TIMEOUT) -> bool:
    """Whether the database answers within ``timeout`` seconds."""
    return await ping(pool, timeout)


async def metrics(request: Request) -> Response:
    svc = request.app.state.services
    svc.metrics.broker_healthy.set(1 if svc.broker.healthy else 0)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return json_response(document(request.app.state.settings.demo_mode))


async def demo_token(request: Request) -> Response:
    user_id = request.query_params.get("user_id", "")
    if not valid_user_id(user_id):
        raise InvalidInput(
            f"user_id is not valid: {USER_ID_RULE}",
            errors=[{"loc": ["query", "user_id"], "msg": USER_ID_RULE}],
        )
    admin = query_bool(request, "admin")
    token = request.app.state.tokens.issue(user_id, admin=admin, ttl=DEMO_TOKEN_TTL)
    response = json_response({"user_id": user_id, "token": token, "expires_in": DEMO_TOKEN_TTL})
    response.headers["Cache-Control"] = "no-store"
    return response


class HttpMetrics:
    """Pure ASGI middleware counting HTTP requests by method, route template and status.

    Latency is measured to the response headers, so a long-lived stream (SSE) is
    counted when it starts instead of skewing the histogram when it ends. An exception
    that escapes the app is counted with the status its handler answers (503 for the
    database being down, else 500).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        async def send_and_count(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                _observe(scope, int(message["status"]), start)
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception as exc:
            if not started:
                _observe(scope, answer_for(exc).status, start)
            raise


def _observe(scope: Scope, status: int, start: float) -> None:
    state = getattr(scope.get("app"), "state", None)
    svc = getattr(state, "services", None)
    if svc is None:  # before the lifespan opened the services
        return
    route = getattr(scope.get("route"), "path", None) or UNMATCHED
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    svc.metrics.http_requests.labels(method, route, str(status)).inc()
    svc.metrics.http_latency.labels(method, route).observe(time.perf_counter() - start)


routes: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
demo_routes: list[BaseRoute] = [
    Route("/demo/token", demo_token, methods=["GET"]),
]


#: Host names demo mode answers to (it binds loopback only, see api/server.py).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8013`` → ``::1``, ``a:80`` → ``a``."""
    if host_header.startswith("["):
        return host_header[1:host_header.find("]")].lower()
    return host_header.rsplit(":", 1)[0].lower()


class LoopbackHosts:
    """Demo mode only: refuses requests addressed to any host name but loopback.

    Demo mode hands out tokens to anyone who asks (``/demo/token``), which is safe only
    because it listens on loopback; a page on another site whose name is re-resolved
    to 127.0.0.1 (DNS rebinding) would otherwise count as same-origin.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            if host_name(Headers(scope=scope).get("host", "")) not in LOOPBACK_HOSTS:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4403})
                else:
                    response = problem(403, "demo mode answers only at localhost, 127.0.0.1 "
                                            "or [::1]; set HUB_JWT_SECRET to serve other names")
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
