"""The SSE endpoint over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from hub.events import _decoded_sse_block, encode, sse_block
from tests.conftest import SERVICE, make_token
from tests.live.conftest import LiveHub, T, counted, flood_until_slow, live_hub, notify, sse_stream


async def test_the_stream_starts_with_hello_and_frames_each_event(hub: LiveHub) -> None:
    await notify(hub, "u1")
    async with sse_stream(hub.url, "u1") as sse:
        headers = sse.response.headers
        assert sse.response.status_code == 200
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        first = await sse.block()
        # hello's id is where the stream continues (not a seq: hello has none), on the
        # block itself, beside the reconnection delay: a standard EventSource that
        # reconnects before the first event resumes from there, after about 1 s.
        assert first == {
            "id": "1", "retry": "1000", "event": "hello", "comments": [],
            "data": {"user_id": "u1", "last_seq": 1, "unread_count": 1, "unseen_count": 1,
                     "protocol": 1},
        }
        created = await notify(hub, "u1", "Essay graded")
        block = await sse.block()
    assert block == {
        "id": "2", "event": "notification.created", "data": created, "comments": []
    }


def test_an_sse_block_never_carries_a_raw_line_break_in_data() -> None:
    block = sse_block(encode("x", 3, {"text": "a\nb\r\nc"}))
    assert block == b'id: 3\nevent: x\ndata: {"text":"a\\nb\\r\\nc"}\n\n'
    assert sse_block(encode("typing", None, {})) == b"event: typing\ndata: {}\n\n"


@pytest.mark.parametrize("type_,seq,data", [
    ("notification.created", 12, {"title": "é ✓ \"q\" ,\"seq\":1,\"data\":2", "n": [1.5]}),
    ("typing", None, {"user_id": "u1"}),
    ("x", 9_223_372_036_854_775_807, "a string"),
    ("", 1, []),
    ('we"ird\nty\\pe', 2, {"k": "v"}),
    ("message.created", 3, {"at": "2024-01-01T00:00:00Z", "nested": {"seq": 5, "data": {}}}),
])
def test_an_sse_block_is_cut_from_the_frame_as_decoding_would_build_it(
    type_: str, seq: int | None, data: Any
) -> None:
    frame = encode(type_, seq, data)
    assert sse_block(frame) == _decoded_sse_block(frame)


async def test_hello_carries_the_resume_position_as_its_id(hub: LiveHub) -> None:
    for i in range(3):
        await notify(hub, "u1", f"n{i}")
    async with sse_stream(hub.url, "u1", since=1) as sse:
        hello = await sse.block()
        assert hello is not None and (hello["event"], hello["id"]) == ("hello", "1")
        # Every block after it has data; the events carry their seq as id.
        blocks = [await sse.block() for _ in range(2)]
    assert [(b["event"], b["id"]) for b in blocks if b is not None] == [
        ("notification.created", "2"), ("notification.created", "3")
    ]


async def test_a_keepalive_comment_is_written_when_nothing_happens(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, heartbeat_seconds=0.2) as hub:
        async with sse_stream(hub.url, "u1") as sse:
            await sse.event()
            block = await sse.block()
            while block is not None and block["id"] is not None:
                block = await sse.block()
            assert block is not None and block["comments"] == ["keepalive"]


async def test_last_event_id_resumes_and_wins_over_since(hub: LiveHub) -> None:
    for i in range(5):
        await notify(hub, "u1", f"n{i}")
    async with sse_stream(hub.url, "u1", since=0, headers={"Last-Event-ID": "3"}) as sse:
        assert (await sse.event())["type"] == "hello"
        got = [await sse.event() for _ in range(2)]
    assert [e["seq"] for e in got] == [4, 5]
    assert got[1]["data"]["title"] == "n4"


async def test_since_in_the_query_resumes(hub: LiveHub) -> None:
    for i in range(3):
        await notify(hub, "u1", f"n{i}")
    token = make_token("u1")
    async with sse_stream(hub.url, token=token, since=1) as sse:
        assert (await sse.event())["type"] == "hello"
        got = [await sse.event() for _ in range(2)]
    assert [e["seq"] for e in got] == [2, 3]


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({}, {}, 401),
        ({"token": "nope"}, {}, 401),
        ({}, SERVICE, 403),
        ({"token": make_token("u1"), "since": "x"}, {}, 422),
        ({"token": make_token("u1")}, {"Last-Event-ID": "-3"}, 422),
    ],
)
async def test_a_bad_request_is_a_problem_before_the_stream_starts(
    hub: LiveHub, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    response = await hub.http.get("/api/stream", params=params, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert len(hub.node.registry) == 0


async def test_a_client_that_leaves_is_forgotten(hub: LiveHub) -> None:
    async with sse_stream(hub.url, "u1") as sse:
        await sse.event()
        assert len(hub.node.registry) == 1
    async with asyncio.timeout(T):
        while len(hub.node.registry):
            await asyncio.sleep(0.01)


async def test_a_client_that_does_not_read_is_dropped_and_its_stream_ends(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, outbox_max_events=20) as hub:
        async with sse_stream(hub.url, "u1") as sse:
            conn = await flood_until_slow(hub, "u1")
            assert conn.outbox.close_code == 4008 and conn.outbox.nbytes == 0
            assert counted(hub.svc, "slow_client_disconnects") == 1
            # Reading again, the client gets what was in flight, then the end (clean, or
            # cut if the server gave up waiting for it to read).
            with contextlib.suppress(httpx.RemoteProtocolError):
                while await sse.block(30) is not None:
                    pass


async def test_an_expiring_token_ends_the_stream(hub: LiveHub) -> None:
    async with sse_stream(hub.url, token=make_token("u1", ttl=-28)) as sse:
        assert (await sse.event())["type"] == "hello"
        while await sse.block() is not None:
            pass
    assert len(hub.node.registry) == 0
