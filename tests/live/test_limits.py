"""Per-user write budget shared by REST and WebSocket, handshake limits, connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth, make_token
from tests.live.conftest import LiveHub, T, live_hub, recv, sse_stream, ws_connect

#: A refill so slow (one token per ~17 minutes) that no test ever sees one.
NO_REFILL = 0.001


def bearer(user: str, tab: str) -> dict[str, str]:
    """Headers with a token of ``user`` distinct from every other (its own ``jti``)."""
    return {"Authorization": f"Bearer {make_token(user, jti=tab)}"}


async def hello(ws: ClientConnection) -> None:
    frame = await recv(ws)
    assert frame["type"] == "hello", frame


async def refusal(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason of a socket that must close before any frame."""
    with pytest.raises(ConnectionClosed) as closed:
        frame = await recv(ws)
        raise AssertionError(f"got a frame before the close: {frame}")
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def replies(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next ``n`` ack/error frames, skipping events (the sender's message.created)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(T):
        while len(out) < n:
            frame = await recv(ws)
            if frame["type"] in ("ack", "error"):
                out.append(frame)
    return out


def send_frame(client_id: str, to: str = "u2") -> str:
    data = {"recipient_id": to, "body": f"hi {client_id}"}
    return orjson.dumps({"type": "message.send", "client_id": client_id, "data": data}).decode()


async def until_connections(hub: LiveHub, user: str, n: int) -> None:
    async with asyncio.timeout(T):
        while hub.node.registry.count(user) != n:
            await asyncio.sleep(0.01)


# ---- one write budget per user -------------------------------------------------------


async def test_sockets_of_one_user_share_one_write_budget_with_rest(
    settings_env: dict[str, Any],
) -> None:
    burst, per_socket = 5, 4
    async with (
        live_hub(
            **settings_env, rate_limit_writes_burst=burst,
            rate_limit_writes_per_second=NO_REFILL,
        ) as hub,
        contextlib.AsyncExitStack() as stack,
    ):
        sockets = [
            await stack.enter_async_context(ws_connect(hub.ws_url(token=make_token("u1", jti=t))))
            for t in ("tab-a", "tab-b", "tab-c")
        ]
        for ws in sockets:
            await hello(ws)
        for i, ws in enumerate(sockets):
            for j in range(per_socket):
                await ws.send(send_frame(f"c{i}-{j}"))
        answers = [frame for ws in sockets for frame in await replies(ws, per_socket)]

        acks = [f for f in answers if f["type"] == "ack"]
        refused = [f for f in answers if f["type"] == "error"]
        assert len(acks) == burst
        assert len(refused) == len(sockets) * per_socket - burst
        assert {f["data"]["code"] for f in refused} == {"rate_limited"}
        assert all(f["data"]["client_id"].startswith("c") for f in refused)
        assert all(f["data"]["retry_after"] > 0 for f in refused)

        # A refused frame was not applied: only the acknowledged messages exist.
        r = await hub.http.get("/api/messages/conversation/u2", headers=auth("u1"))
        assert len(r.json()["items"]) == burst

        # notifications.mark_read is a write too; the connection stays open throughout.
        mark = {"type": "notifications.mark_read", "client_id": "m1", "data": {"ids": [1]}}
        await sockets[0].send(orjson.dumps(mark).decode())
        (frame,) = await replies(sockets[0], 1)
        assert frame["data"]["code"] == "rate_limited" and frame["data"]["client_id"] == "m1"
        await sockets[0].send('{"type":"ping"}')
        assert (await recv(sockets[0]))["type"] == "pong"

        # REST writes of the same user, with yet another token, find the budget spent.
        r = await hub.http.post(
            "/api/messages/send", headers=bearer("u1", "tab-d"),
            json={"recipient_id": "u2", "body": "over REST"},
        )
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        assert "too many changes" in r.json()["detail"]
        # Another user's budget is their own.
        r = await hub.http.post(
            "/api/messages/send", headers=auth("u2"), json={"recipient_id": "u1", "body": "hi"}
        )
        assert r.status_code == 201


async def test_rest_writes_spend_the_budget_of_websocket_writes(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(
        **settings_env, rate_limit_writes_burst=2, rate_limit_writes_per_second=NO_REFILL
    ) as hub:
        for tab in ("rest-1", "rest-2"):
            r = await hub.http.post(
                "/api/notifications/mark-all-read", headers=bearer("u1", tab), json={}
            )
            assert r.status_code == 200
        async with ws_connect(hub.ws_url("u1")) as ws:
            await hello(ws)
            await ws.send(send_frame("late"))
            (frame,) = await replies(ws, 1)
        assert frame["data"] == {
            "code": "rate_limited", "message": "too many changes; slow down",
            "retry_after": frame["data"]["retry_after"], "client_id": "late",
        }
        r = await hub.http.get("/api/messages/conversation/u2", headers=auth("u1"))
        assert r.json()["items"] == []


async def test_typing_and_ping_frames_do_not_spend_the_write_budget(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(
        **settings_env, rate_limit_writes_burst=1, rate_limit_writes_per_second=NO_REFILL
    ) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            await hello(ws)
            for _ in range(5):
                await ws.send('{"type":"ping"}')
                await ws.send('{"type":"typing","data":{"to":"u2"}}')
            for _ in range(5):
                assert (await recv(ws))["type"] == "pong"
            await ws.send(send_frame("only"))
            (frame,) = await replies(ws, 1)
        assert frame["type"] == "ack"


async def test_forged_tokens_cannot_spend_a_users_write_budget(
    settings_env: dict[str, Any],
) -> None:
    forged = jwt.encode({"sub": "u1", "exp": int(time.time()) + 600}, "x" * 32, "HS256")
    async with live_hub(
        **settings_env, rate_limit_writes_burst=1, rate_limit_writes_per_second=NO_REFILL
    ) as hub:
        headers = {"Authorization": f"Bearer {forged}"}
        statuses = [
            (await hub.http.post("/api/notifications/mark-all-read", headers=headers, json={}))
            .status_code
            for _ in range(3)
        ]
        # Charged to the forged credential's own bucket, never to u1's.
        assert statuses == [401, 429, 429]
        r = await hub.http.post("/api/notifications/mark-all-read", headers=auth("u1"), json={})
        assert r.status_code == 200


# ---- handshakes spend the address budget ---------------------------------------------


async def test_a_handshake_flood_from_one_address_is_refused_once_its_bucket_is_empty(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(
        **settings_env, rate_limit_ip_burst=4, rate_limit_ip_per_second=NO_REFILL
    ) as hub:
        # WebSocket and SSE handshakes take turns spending the one address bucket.
        for _ in range(2):
            async with ws_connect(hub.ws_url("u1")) as ws:
                await hello(ws)
            async with sse_stream(hub.url, "u1") as sse:
                assert (await sse.event())["type"] == "hello"

        # Refused before the token is even looked at: a garbage one gets 4429, not 4401.
        for url in (hub.ws_url("u1"), hub.ws_url(token="garbage")):
            async with ws_connect(url) as ws:
                code, reason = await refusal(ws)
            assert code == 4429 and reason.startswith("too many connection attempts")

        r = await hub.http.get("/api/stream", headers=auth("u1"))
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        assert "address" in r.json()["detail"]
        assert len(hub.node.registry) == 0


# ---- at most max_connections_per_user live connections per user ----------------------


async def test_the_connection_over_the_cap_is_refused_until_one_closes(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, max_connections_per_user=2) as hub:
        async with ws_connect(hub.ws_url("u1")) as first:
            await hello(first)
            async with sse_stream(hub.url, "u1") as sse:
                assert (await sse.event())["type"] == "hello"

                async with ws_connect(hub.ws_url("u1")) as third:
                    code, reason = await refusal(third)
                assert code == 4429 and reason.startswith("too many live connections")
                r = await hub.http.get("/api/stream", headers=auth("u1"))
                assert r.status_code == 429
                assert r.headers["content-type"] == "application/problem+json"
                assert "too many live connections" in r.json()["detail"]
                assert r.headers["retry-after"] == "5"  # every 429 says when to retry

                # The cap is per user: someone else still gets in.
                async with ws_connect(hub.ws_url("u2")) as other:
                    await hello(other)
                assert hub.node.registry.count("u1") == 2

            await until_connections(hub, "u1", 1)
            async with ws_connect(hub.ws_url("u1")) as again:
                await hello(again)
                assert hub.node.registry.count("u1") == 2
        await until_connections(hub, "u1", 0)
        assert hub.node.registry.guards == 0


async def test_concurrent_connects_of_one_user_never_overshoot_the_cap(
    settings_env: dict[str, Any],
) -> None:
    cap, tries = 3, 8

    async def connect(stack: contextlib.AsyncExitStack) -> str | int:
        ws = await stack.enter_async_context(ws_connect(hub.ws_url("u1")))
        try:
            return str((await recv(ws))["type"])
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code

    async with (
        live_hub(**settings_env, max_connections_per_user=cap) as hub,
        contextlib.AsyncExitStack() as stack,
    ):
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(connect(stack) for _ in range(tries))), T
        )
        assert sorted(outcomes, key=str) == [4429] * (tries - cap) + ["hello"] * cap
        assert hub.node.registry.count("u1") == cap

