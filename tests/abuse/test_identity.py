"""User ids as identity providers write them, on a live hub (real tokens and sockets).

A ``sub`` is any non-empty string of at most 255 characters without control characters:
``auth0|…``, ``google-oauth2|…``, e-mail addresses with ``+``, and ids with ``/``, ``%``,
spaces or any script must work everywhere a user id appears: the token, REST bodies and
paths (as one percent-encoded segment), direct messages, typing, Redis channels, ingest.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import SERVICE, auth, make_token
from tests.live.conftest import (
    LiveHub,
    T,
    closed_code,
    live_hub,
    recv,
    recv_until,
    sse_stream,
    ws_connect,
)

#: Subjects real identity providers issue, and ids that stress paths, URLs and channels.
SUBJECTS = [
    "auth0|5f7c8ec7c33c6c004bbafe82",
    "google-oauth2|104365742389216572114",
    "ann+tag@example.com",
    "samlp|corp|ann.o'brien@example.com",
    "team/ann",
    "100%ann",
    "ann smith",
    "名前🙂",
    "*?[x]",
    "a&b=c?d#e",
    "x" * 255,
]
#: What no user id may be: empty, too long, with a control character, or a path step.
REFUSED = ["", "x" * 256, "a\x00b", "a\nb", "a\tb", "\x7f", "a\x85b", "\ud800", ".", ".."]


def segment(user_id: str) -> str:
    """``user_id`` as one path segment: every character but ``A-Za-z0-9-._~`` encoded."""
    return quote(user_id, safe="")


async def hello(ws: Any) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["type"] == "hello", frame
    return frame


@pytest.mark.parametrize("user", SUBJECTS)
async def test_an_identity_provider_subject_connects_and_gets_its_notifications(
    hub: LiveHub, user: str
) -> None:
    async with ws_connect(hub.ws_url(user)) as ws:
        assert (await hello(ws))["data"]["user_id"] == user
        created = await hub.http.post("/api/notifications", headers=SERVICE, json={
            "user_ids": [user, "bystander"], "type": "t", "title": "for you"})
        assert created.status_code == 201, created.text
        event = await recv_until(ws, "notification.created")
        assert event["data"]["user_id"] == user
    inbox = await hub.http.get("/api/notifications", headers=auth(user))
    assert inbox.status_code == 200, inbox.text
    assert [n["title"] for n in inbox.json()["items"]] == ["for you"]


async def test_an_identity_provider_subject_streams_over_sse(hub: LiveHub) -> None:
    user = "auth0|5f7c8ec7c33c6c004bbafe82"
    async with sse_stream(hub.url, user) as sse:
        assert (await sse.event())["data"]["user_id"] == user
        created = await hub.http.post("/api/notifications", headers=SERVICE, json={
            "user_id": user, "type": "t", "title": "over SSE"})
        assert created.status_code == 201, created.text
        event = await sse.event()
    assert event["type"] == "notification.created"
    assert event["data"]["title"] == "over SSE"


@pytest.mark.parametrize("user", ["team/ann", "100%ann", "a&b=c?d#e", "ann smith", "...", "a/"])
async def test_a_user_id_in_a_path_is_its_percent_encoded_segment(
    hub: LiveHub, user: str
) -> None:
    prefs = {"muted": True}
    put = await hub.http.patch("/api/notifications/preferences", headers=auth(user), json=prefs)
    assert put.status_code == 200, put.text
    got = await hub.http.get(f"/api/users/{segment(user)}/preferences", headers=SERVICE)
    assert got.status_code == 200, got.text
    assert got.json()["muted"] is True
    sent = await hub.http.post("/api/messages/send", headers=auth("ann"), json={
        "recipient_id": user, "body": "hi"})
    assert sent.status_code == 201, sent.text
    convo = await hub.http.get(
        f"/api/messages/conversation/{segment(user)}", headers=auth("ann")
    )
    assert convo.status_code == 200, convo.text
    assert [(m["recipient_id"], m["body"]) for m in convo.json()["items"]] == [(user, "hi")]
    back = await hub.http.get(
        f"/api/messages/conversation/{segment('ann')}", headers=auth(user)
    )
    assert [m["sender_id"] for m in back.json()["items"]] == ["ann"]


async def test_a_direct_message_and_typing_reach_an_identity_provider_subject(
    hub: LiveHub,
) -> None:
    ann, bob = "google-oauth2|104365742389216572114", "auth0|ann+bob/x%y"
    async with ws_connect(hub.ws_url(ann)) as a, ws_connect(hub.ws_url(bob)) as b:
        await hello(a)
        await hello(b)
        await a.send(orjson.dumps({"type": "typing", "data": {"to": bob}}).decode())
        assert (await recv_until(b, "typing"))["data"] == {"user_id": ann}
        await a.send(orjson.dumps({"type": "message.send", "client_id": "c1",
                                   "data": {"recipient_id": bob, "body": "hello"}}).decode())
        message = (await recv_until(b, "message.created"))["data"]
    assert (message["sender_id"], message["recipient_id"]) == (ann, bob)


@pytest.mark.parametrize("user", REFUSED, ids=repr)
async def test_a_token_whose_sub_is_not_a_user_id_is_refused(hub: LiveHub, user: str) -> None:
    token = make_token(user)
    response = await hub.http.get("/api/notifications",
                                  headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    async with ws_connect(hub.ws_url(token=token)) as ws:
        assert await closed_code(ws) == 4401


@pytest.mark.parametrize("user", REFUSED, ids=repr)
async def test_a_body_or_path_user_id_that_cannot_be_stored_is_422(
    hub: LiveHub, user: str
) -> None:
    async def post(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        # json.dumps escapes a lone surrogate as \ud800, which httpx's encoder refuses.
        return await hub.http.post(path, content=json.dumps(body), headers={
            **headers, "Content-Type": "application/json"})

    body = {"user_id": user, "type": "t", "title": "x"}
    created = await post("/api/notifications", SERVICE, body)
    assert created.status_code == 422, created.text
    many = await post("/api/notifications", SERVICE, {
        "user_ids": ["ok", user], "type": "t", "title": "x"})
    assert many.status_code == 422, many.text
    dm = await post("/api/messages/send", auth("ann"), {"recipient_id": user, "body": "hi"})
    assert dm.status_code == 422, dm.text
    # An empty segment is another route (see below); clients resolve . and .. away.
    if user and "\ud800" not in user and user not in (".", ".."):
        got = await hub.http.get(f"/api/users/{segment(user)}/preferences", headers=SERVICE)
        # A decoded path with a line break matches no route at all.
        assert got.status_code == (404 if "\n" in user else 422), got.text
        assert got.headers["content-type"] == "application/problem+json"


async def test_an_empty_user_id_segment_is_never_a_user(hub: LiveHub) -> None:
    got = await hub.http.get("/api/users//preferences", headers=SERVICE)
    assert got.status_code in (404, 422), got.text
    convo = await hub.http.get("/api/messages/conversation/", headers=auth("ann"),
                               follow_redirects=True)
    assert convo.status_code in (404, 422), convo.text


async def test_user_ids_any_redis_could_misread_are_separate_channels_and_ingest_entries(
    settings_env: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    users = ["*", "a*", "a?c", "[ab]c", "a b|c", "team/ann", "名前"]
    async with (
        live_hub(**settings_env, redis_url=redis_url, redis_prefix=redis_prefix) as hub,
        aioredis.from_url(redis_url) as redis,
    ):
        sockets = [await ws_connect(hub.ws_url(u)).__aenter__() for u in users]
        try:
            for ws in sockets:
                await hello(ws)
            for user in users:
                payload = orjson.dumps({"user_id": user, "type": "t", "title": f"to {user}"})
                await redis.xadd(f"{redis_prefix}ingest", {"payload": payload})
            for user, ws in zip(users, sockets, strict=True):
                event = await recv_until(ws, "notification.created")
                assert event["data"]["title"] == f"to {user}"
            # Each got its own and nothing else: a glob-like id matched no other channel.
            for ws in sockets:
                with pytest.raises(TimeoutError):
                    await recv_until(ws, "notification.created", timeout=0.5)
        finally:
            for ws in sockets:
                await ws.close()
        await asyncio.wait_for(asyncio.sleep(0), T)
