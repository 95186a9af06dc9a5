"""The REST rate-limit middleware, around the real app (and a tiny app for plumbing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from api.ratelimit import RateLimitMiddleware
from hub.ratelimit import RateLimiter
from tests.conftest import API_KEY, SERVICE, auth


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(burst: int, clock: FakeClock, rate: float = 1.0) -> RateLimiter:
    return RateLimiter(rate_per_second=rate, burst=burst, clock=clock)


@asynccontextmanager
async def http(app: Any, ip: str = "203.0.113.7") -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from address ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_over_the_burst_is_429_problem_json_with_retry_after(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(3, clock, rate=0.5), ip_limiter=limiter(100, clock))
    # One token for every request: the budget is per credential, and a token made a
    # second later (its issue time) would be another credential.
    headers = auth("u1")
    async with http(limited) as client:
        for _ in range(3):
            r = await client.get("/api/notifications/unread-count", headers=headers)
            assert r.status_code == 200
        r = await client.get("/api/notifications/unread-count", headers=headers)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "2"  # one token at 0.5 per second
    body = r.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert "retry in 2 s" in body["detail"]


async def test_the_budget_refills_over_time(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(2, clock), ip_limiter=limiter(100, clock))
    headers = auth("u1")
    async with http(limited) as client:
        statuses = [
            (await client.get("/api/notifications/unread-count", headers=headers)).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        clock.advance(1.0)
        r = await client.get("/api/notifications/unread-count", headers=headers)
        assert r.status_code == 200
        r = await client.get("/api/notifications/unread-count", headers=headers)
        assert r.status_code == 429


async def test_users_behind_one_address_have_budgets_of_their_own(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(2, clock), ip_limiter=limiter(100, clock))
    headers = auth("u1")  # one credential (see test_over_the_burst...)
    async with http(limited) as client:
        for _ in range(2):
            await client.get("/api/notifications/unread-count", headers=headers)
        r = await client.get("/api/notifications/unread-count", headers=headers)
        assert r.status_code == 429
        r = await client.get("/api/notifications/unread-count", headers=auth("u2"))
        assert r.status_code == 200


async def test_health_ready_metrics_and_static_files_are_never_limited(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(1, clock))
    async with http(limited) as client:
        for _ in range(5):
            for path in ("/health", "/ready", "/metrics", "/static/notifyhub.js"):
                r = await client.get(path)
                assert r.status_code == 200, path
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        r = await client.get("/openapi.json")
        assert r.status_code == 429  # everything else is limited


async def test_api_key_callers_use_their_own_higher_limit(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(
        app, limiter(2, clock), api_key_limiter=limiter(10, clock), api_keys=[API_KEY]
    )
    async with http(limited) as client:
        for _ in range(10):
            r = await client.get("/api/templates", headers=SERVICE)
            assert r.status_code == 200
        r = await client.get("/api/templates", headers=SERVICE)
        assert r.status_code == 429
        assert "API key" in r.json()["detail"]
        # The service did not spend the address's budget: a user there still gets in.
        r = await client.get("/api/notifications/unread-count", headers=auth("u1"))
        assert r.status_code == 200


async def test_api_key_callers_are_not_limited_without_an_api_key_limiter(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(1, clock), api_keys=[API_KEY])
    async with http(limited) as client:
        for _ in range(20):
            r = await client.get("/api/templates", headers=SERVICE)
            assert r.status_code == 200


async def test_garbage_tokens_from_one_address_are_limited_by_the_address(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(app, limiter(100, clock), ip_limiter=limiter(5, clock))
    async with http(limited) as client:
        for i in range(5):
            headers = {"Authorization": f"Bearer garbage-{i}"}
            r = await client.get("/api/notifications/unread-count", headers=headers)
            assert r.status_code == 401
        r = await client.get(
            "/api/notifications/unread-count", headers={"Authorization": "Bearer garbage-new"}
        )
        assert r.status_code == 429
        assert "address" in r.json()["detail"]
    async with http(limited, ip="198.51.100.1") as other:
        r = await other.get("/api/notifications/unread-count", headers=auth("u1"))
        assert r.status_code == 200


async def test_invalid_api_keys_are_charged_to_the_address(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(
        app, limiter(100, clock), ip_limiter=limiter(3, clock),
        api_key_limiter=limiter(1000, clock), api_keys=[API_KEY],
    )
    async with http(limited) as client:
        statuses = [
            (await client.get("/api/templates", headers={"X-API-Key": f"wrong-{i}"})).status_code
            for i in range(4)
        ]
    assert statuses == [401, 401, 401, 429]


async def test_writes_are_also_charged_to_the_write_limiter(app: Any) -> None:
    clock = FakeClock()
    limited = RateLimitMiddleware(
        app, limiter(100, clock), write_limiter=limiter(1, clock), ip_limiter=limiter(100, clock)
    )
    headers = auth("u1")
    async with http(limited) as client:
        r = await client.post("/api/notifications/mark-all-read", json={}, headers=headers)
        assert r.status_code == 200
        r = await client.post("/api/notifications/mark-all-read", json={}, headers=headers)
        assert r.status_code == 429
        r = await client.get("/api/notifications/unread-count", headers=headers)
        assert r.status_code == 200  # reads are not writes
        r = await client.post(
            "/api/notifications/mark-all-read", json={}, headers=auth("u2")
        )
        assert r.status_code == 200  # another user's writes are their own


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def tiny_app(*middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/x", ok, methods=["GET"])], middleware=list(middleware))


async def test_a_query_token_shares_its_budget_with_the_same_token_in_the_header() -> None:
    clock = FakeClock()
    app = tiny_app(Middleware(
        RateLimitMiddleware, limiter=limiter(2, clock), ip_limiter=limiter(100, clock)
    ))
    async with http(app) as client:
        assert (await client.get("/x?token=abc")).status_code == 200
        assert (await client.get("/x", headers={"Authorization": "Bearer abc"})).status_code == 200
        assert (await client.get("/x?token=abc")).status_code == 429
        assert (await client.get("/x?token=xyz")).status_code == 200


async def test_a_429_inside_cors_still_carries_the_cors_headers() -> None:
    clock = FakeClock()
    app = tiny_app(
        Middleware(CORSMiddleware, allow_origins=["https://app.example"]),
        Middleware(RateLimitMiddleware, limiter=limiter(1, clock)),
    )
    origin = {"Origin": "https://app.example"}
    async with http(app) as client:
        assert (await client.get("/x", headers=origin)).status_code == 200
        r = await client.get("/x", headers=origin)
    assert r.status_code == 429
    # Without this a browser sees an opaque network error instead of a readable 429.
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_websocket_and_lifespan_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not answer")

    middleware = RateLimitMiddleware(inner, limiter(1, FakeClock(), rate=0.001))
    for _ in range(3):
        scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("192.0.2.1", 1)}
        await middleware(scope, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert seen == ["websocket"] * 3 + ["lifespan"]


async def test_a_disabled_limiter_lets_everything_through() -> None:
    app = tiny_app(Middleware(RateLimitMiddleware, limiter=RateLimiter(0, 1)))
    async with http(app) as client:
        for _ in range(50):
            assert (await client.get("/x")).status_code == 200
