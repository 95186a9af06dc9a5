"""The WebSocket endpoint over real sockets (uvicorn on an ephemeral port)."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.ws import origin_allowed
from tests.conftest import SECRET, SERVICE, auth, make_token
from tests.live.conftest import (
    LiveHub,
    T,
    closed_code,
    counted,
    flood_until_slow,
    live_hub,
    notify,
    recv,
    recv_until,
    ws_connect,
)


async def hello(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["type"] == "hello", frame
    return frame


async def test_hello_is_the_first_frame_with_last_seq_and_unread_count(hub: LiveHub) -> None:
    await notify(hub, "u1")
    await notify(hub, "u1")
    async with ws_connect(hub.ws_url("u1")) as ws:
        frame = await recv(ws)
    assert frame == {
        "type": "hello", "seq": None, "data": {"user_id": "u1", "last_seq": 2, "unread_count": 2,
                                                   "unseen_count": 2, "protocol": 1}
    }


async def test_a_notification_created_over_rest_arrives_with_the_next_seq(hub: LiveHub) -> None:
    await notify(hub, "u1")
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        created = await notify(hub, "u1", "Essay graded")
        frame = await recv(ws)
    assert frame == {"type": "notification.created", "seq": 2, "data": created}


async def test_a_user_token_in_the_authorization_header_works(hub: LiveHub) -> None:
    headers = {"Authorization": f"Bearer {make_token('u1')}"}
    async with ws_connect(hub.ws_url(), additional_headers=headers) as ws:
        assert (await hello(ws))["data"]["user_id"] == "u1"


async def test_every_event_type_reaches_the_right_users(hub: LiveHub) -> None:
    http = hub.http
    async with (
        ws_connect(hub.ws_url("u1")) as u1,
        ws_connect(hub.ws_url("u2")) as u2,
        ws_connect(hub.ws_url("u3")) as u3,
    ):
        for ws in (u1, u2, u3):
            await hello(ws)
        note = await notify(hub, "u1")
        assert (await recv(u1))["type"] == "notification.created"

        r = await http.post("/api/notifications/mark-read", headers=auth("u1"),
                            json={"ids": [note["id"]]})
        assert r.status_code == 200
        frame = await recv(u1)
        assert frame["type"] == "notifications.read"
        assert frame["data"] == {"ids": [note["id"]], "all": False, "unread_count": 0,
                                 "unseen_count": 0}

        r = await http.delete(f"/api/notifications/{note['id']}", headers=auth("u1"))
        assert r.status_code == 204
        frame = await recv(u1)
        assert frame["type"] == "notification.deleted"
        assert frame["data"] == {"id": note["id"], "unread_count": 0, "unseen_count": 0}

        r = await http.post("/api/messages/send", headers=auth("u1"),
                            json={"recipient_id": "u2", "body": "hi"})
        assert r.status_code == 201
        message = r.json()
        assert await recv_until(u1, "message.created") == {
            "type": "message.created", "seq": 4, "data": message
        }
        assert (await recv_until(u2, "message.created"))["data"] == message

        r = await http.post("/api/messages/mark-read", headers=auth("u2"),
                            json={"ids": [message["id"]]})
        assert r.status_code == 200
        for ws in (u1, u2):
            frame = await recv_until(ws, "messages.read")
            assert frame["data"] == {"ids": [message["id"]], "reader_id": "u2"}

        r = await http.delete(f"/api/messages/{message['id']}", headers=auth("u2"))
        assert r.status_code == 204
        assert (await recv_until(u2, "message.deleted"))["data"] == {"id": message["id"]}
        r = await http.delete(f"/api/messages/{message['id']}?for_everyone=true",
                              headers=auth("u1"))
        assert r.status_code == 204
        assert (await recv_until(u1, "message.deleted"))["data"] == {"id": message["id"]}

        r = await http.post("/api/announcements", headers=auth("admin", admin=True),
                            json={"title": "Maintenance", "body": "tonight"})
        assert r.status_code == 201
        for ws in (u1, u2, u3):
            frame = await recv_until(ws, "announcement.created")
            assert frame["seq"] is None and frame["data"]["title"] == "Maintenance"

        await u1.send(orjson.dumps({"type": "typing", "data": {"to": "u2"}}).decode())
        assert await recv_until(u2, "typing") == {
            "type": "typing", "seq": None, "data": {"user_id": "u1"}
        }
        # u3 saw nothing but the announcement: its next frame is the answer to a ping.
        await u3.send('{"type":"ping"}')
        assert (await recv(u3))["type"] == "pong"


async def test_ping_gets_pong(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        await ws.send('{"type":"ping"}')
        assert await recv(ws) == {"type": "pong", "seq": None, "data": {}}


async def test_message_send_is_acked_with_the_stored_message_once_per_client_id(
    hub: LiveHub,
) -> None:
    send = {"type": "message.send", "client_id": "c1", "data": {"recipient_id": "u2",
                                                                 "body": "hello"}}
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        await ws.send(orjson.dumps(send).decode())
        ack = await recv_until(ws, "ack")
        message = ack["data"]["message"]
        assert ack["seq"] is None and ack["data"]["client_id"] == "c1"
        assert message["sender_id"] == "u1" and message["recipient_id"] == "u2"
        assert message["body"] == "hello" and message["client_id"] == "c1"
        await ws.send(orjson.dumps(send).decode())
        again = await recv_until(ws, "ack")
        assert again["data"]["message"] == message
    r = await hub.http.get("/api/messages/conversation/u2", headers=auth("u1"))
    assert [m["id"] for m in r.json()["items"]] == [message["id"]]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"type": 5}', "invalid_frame"),
        ('{"type": "subscribe"}', "unknown_type"),
        ('{"type": "typing", "data": {"to": "bad\\u0007id"}}', "invalid_input"),
        ('{"type": "typing", "data": "u2"}', "invalid_input"),
        ('{"type": "notifications.mark_read", "data": {"ids": "x"}}', "invalid_input"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_stays_open(
    hub: LiveHub, frame: str, code: str
) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        await ws.send(frame)
        error = await recv(ws)
        assert error["type"] == "error" and error["seq"] is None
        assert error["data"]["code"] == code and error["data"]["message"]
        await ws.send('{"type":"ping"}')
        assert (await recv(ws))["type"] == "pong"


async def test_a_failed_message_send_names_its_client_id(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        await ws.send(orjson.dumps({"type": "message.send", "client_id": "c9",
                                    "data": {"recipient_id": "u1", "body": "me"}}).decode())
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["data"]["code"] == "invalid_input" and error["data"]["client_id"] == "c9"
        await ws.send(orjson.dumps({"type": "message.send", "client_id": "c10",
                                    "data": {"recipient_id": "u2"}}).decode())
        error = await recv(ws)
        assert error["data"]["client_id"] == "c10" and error["data"]["errors"]


async def test_mark_read_over_the_socket_emits_the_read_event(hub: LiveHub) -> None:
    note = await notify(hub, "u1")
    async with ws_connect(hub.ws_url("u1", since=1)) as ws:
        await hello(ws)
        frame = {"type": "notifications.mark_read", "client_id": "r1",
                 "data": {"ids": [note["id"]]}}
        await ws.send(orjson.dumps(frame).decode())
        # The event is published before the reply is queued; both arrive.
        got = {f["type"]: f for f in [await recv(ws), await recv(ws)]}
        assert got["ack"]["data"] == {"client_id": "r1", "updated": 1, "unread_count": 0,
                                       "unseen_count": 0}
        assert got["notifications.read"]["seq"] == 2


async def test_typing_is_rate_limited_per_connection(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as u1, ws_connect(hub.ws_url("u2")) as u2:
        await hello(u1)
        await hello(u2)
        for _ in range(5):
            await u1.send('{"type":"typing","data":{"to":"u2"}}')
        await u1.send('{"type":"ping"}')
        assert (await recv(u1))["type"] == "pong"  # all five were handled by now
        await u2.send('{"type":"ping"}')
        assert (await recv(u2))["type"] == "typing"
        assert (await recv(u2))["type"] == "pong"


async def test_a_frame_over_64_kib_closes_with_1009(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1")) as ws:
        await hello(ws)
        await ws.send('{"type":"ping","pad":"' + "x" * (64 * 1024) + '"}')
        assert await closed_code(ws) == 1009


async def test_the_reader_enforces_the_frame_limit_behind_a_larger_server_limit(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, server_options={"ws_max_size": 1 << 20}) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            await hello(ws)
            await ws.send("x" * (64 * 1024 + 1))
            assert await closed_code(ws) == 1009


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"token": "not-a-jwt"}, {}),
        ({}, {}),
        ({"token": make_token("u1", ttl=-60)}, {}),
        ({}, {"Authorization": "Basic dTE6cHc="}),
        ({"token": jwt.encode({"sub": "u1", "exp": 10**400}, SECRET, algorithm="HS256")}, {}),
    ],
)
async def test_a_bad_token_closes_with_4401_before_hello(
    hub: LiveHub, params: dict[str, str], headers: dict[str, str]
) -> None:
    url = hub.ws_url(**params)
    async with ws_connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), T)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_an_api_key_cannot_open_a_live_connection(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url(), additional_headers=SERVICE) as ws:
        assert await closed_code(ws) == 4403


async def test_a_bad_since_closes_with_4400(hub: LiveHub) -> None:
    async with ws_connect(hub.ws_url("u1", since="-1")) as ws:
        assert await closed_code(ws) == 4400


async def test_origin_must_be_the_hub_itself_or_allowed(settings_env: dict[str, Any]) -> None:
    allowed = "https://app.example.com"
    async with live_hub(**settings_env, allowed_origins=[allowed]) as hub:
        async with ws_connect(hub.ws_url("u1"), origin="https://evil.example.com") as ws:
            assert await closed_code(ws) == 4403
        for origin in (allowed, hub.url, None):
            async with ws_connect(hub.ws_url("u1"), origin=origin) as ws:
                await hello(ws)


async def test_an_expiring_token_closes_the_connection_with_4401(hub: LiveHub) -> None:
    # exp is 28 s ago: still accepted within the 30 s leeway, closed when it runs out.
    async with ws_connect(hub.ws_url(token=make_token("u1", ttl=-28))) as ws:
        await hello(ws)
        assert await closed_code(ws) == 4401
    assert len(hub.node.registry) == 0


async def test_a_client_that_does_not_read_is_closed_with_4008(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, outbox_max_events=20) as hub:
        # max_queue=1: the client library stops reading the socket after one frame.
        async with ws_connect(hub.ws_url("u1"), max_queue=1) as ws:
            conn = await flood_until_slow(hub, "u1", forgotten=False)
            assert conn.outbox.close_code == 4008
            assert conn.outbox.nbytes == 0 and len(conn.outbox) == 0
            assert counted(hub.svc, "slow_client_disconnects") == 1
            # Reading again within the close grace: a send that waited on the full
            # socket goes out, then the close frame.
            assert await closed_code(ws, 30) == 4008
            async with asyncio.timeout(T):
                while len(hub.node.registry):
                    await asyncio.sleep(0.01)


async def test_a_plain_http_request_to_ws_is_refused(hub: LiveHub) -> None:
    response = await hub.http.get("/ws")
    assert response.status_code in (400, 404, 426)


async def test_the_handshake_with_a_wrong_path_fails(hub: LiveHub) -> None:
    with pytest.raises(InvalidStatus):
        async with ws_connect(hub.url.replace("http", "ws") + "/nope"):
            pass


async def test_frames_over_the_rate_limit_get_an_error_and_a_flood_closes_with_1008(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, ws_frames_per_second=0.5, ws_frames_burst=2) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            await hello(ws)
            for _ in range(2):
                await ws.send('{"type":"ping"}')
                assert (await recv(ws))["type"] == "pong"
            await ws.send('{"type":"message.send","client_id":"c1","data":{}}')
            error = await recv(ws)
            assert error["data"]["code"] == "rate_limited"
            assert error["data"]["client_id"] == "c1" and error["data"]["retry_after"] > 0
            await ws.send('{"type":"ping"}')
            assert (await recv(ws))["data"]["code"] == "rate_limited"
            await ws.send('{"type":"ping"}')  # a whole burst refused in a row, and more
            assert await closed_code(ws) == 1008


async def test_a_flood_sent_back_to_back_is_told_rate_limited_before_the_1008_close(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, ws_frames_per_second=1, ws_frames_burst=10) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            await hello(ws)
            for _ in range(120):  # without waiting for any reply
                await ws.send('{"type":"ping"}')
            kinds = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = await recv(ws)
                    kinds.append(frame["type"] if frame["type"] != "error"
                                 else frame["data"]["code"])
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert kinds[-1] == "rate_limited", kinds
    assert "pong" in kinds


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "hub.example:8013", [], True),
        ("http://hub.example:8013", "hub.example:8013", [], True),
        ("https://hub.example", "hub.example", [], True),  # TLS ends at the proxy
        ("https://hub.example", "hub.example:443", [], True),
        ("http://hub.example", "hub.example:80", [], True),
        ("HTTP://Hub.Example:8013/", "hub.example:8013", [], True),
        ("http://hub.example:8014", "hub.example:8013", [], False),
        ("https://hub.example", "hub.example:8013", [], False),
        ("http://evil.example:8013", "hub.example:8013", [], False),
        ("null", "hub.example", [], False),
        ("http://hub.example:x", "hub.example", [], False),
        ("https://app.example", "hub.example", ["https://app.example/"], True),
        ("https://other.example", "hub.example", ["*"], True),
    ],
)
def test_origin_rules(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


@pytest.mark.parametrize("deflate", [False, True])
async def test_frames_go_out_by_the_direct_write_unless_permessage_deflate_is_on(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, deflate: bool
) -> None:
    from api.server import WebSocketProtocol

    written: list[bool] = []
    direct = WebSocketProtocol.send_text_now

    def counting(self: WebSocketProtocol, frame: bytes) -> bool:
        written.append(went := direct(self, frame))
        return went

    monkeypatch.setattr(WebSocketProtocol, "send_text_now", counting)
    async with live_hub(**{**settings_env, "ws_per_message_deflate": deflate}) as hub:
        async with ws_connect(hub.ws_url("u1"), compression="deflate") as ws:
            await hello(ws)
            created = [await notify(hub, "u1", f"n{i}") for i in range(5)]
            frames = [await recv(ws) for _ in created]
    assert [f["data"] for f in frames] == created
    assert [f["seq"] for f in frames] == [1, 2, 3, 4, 5]
    if deflate:  # every frame went through websockets' compressor instead
        assert written and not any(written)
    else:
        assert written.count(True) >= len(created)
