"""The node against a real database and the in-process broker, without sockets.

A test connection is read straight from its outbox, the way a transport's writer does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from db import events as event_log
from hub.connection import Close, Connection, start_point
from hub.errors import Unavailable
from hub.events import BROADCAST, encode, user_channel
from hub.models import NotificationCreate
from hub.node import Node
from hub.notifications import create
from hub.services import Services
from tests.conftest import running_app
from tests.live.conftest import counted

T = 10.0


@pytest.fixture
def node(app: Any) -> Node:
    return app.state.node  # type: ignore[no-any-return]


async def log_events(svc: Services, user: str, n: int) -> list[tuple[str, int, str, Any]]:
    """Append ``n`` events to ``user``'s log without publishing them."""
    async with svc.pool.acquire() as conn, conn.transaction():
        return await event_log.append(conn, [(user, "test.event", {"i": i}) for i in range(n)])


async def frames(conn: Connection, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(conn.outbox.get(), T)
        assert frame is not None, f"closed with {conn.outbox.close_code}"
        out.append(orjson.loads(frame))
    return out


async def connect(node: Node, user: str = "u1", since: int | None = None) -> Connection:
    conn = node.connection(user, "test", None)
    await asyncio.wait_for(node.attach(conn, since), T)
    return conn


async def notify(svc: Services, user: str, title: str = "hi") -> None:
    await create(svc, NotificationCreate(user_id=user, type="t", title=title))


async def test_hello_is_the_first_frame_with_last_seq_and_unread_count(node: Node) -> None:
    await notify(node.svc, "u1")
    await notify(node.svc, "u1")
    conn = await connect(node)
    [hello] = await frames(conn, 1)
    assert hello == {
        "type": "hello", "seq": None, "data": {"user_id": "u1", "last_seq": 2, "unread_count": 2,
                                                   "unseen_count": 2, "protocol": 1}
    }
    await node.detach(conn)


async def test_without_since_only_newer_events_arrive(node: Node) -> None:
    await notify(node.svc, "u1", "old")
    conn = await connect(node)
    await notify(node.svc, "u1", "new")
    hello, event = await frames(conn, 2)
    assert event["type"] == "notification.created" and event["seq"] == 2
    assert event["data"]["title"] == "new"
    await node.detach(conn)


async def test_since_replays_the_missed_events_in_order_then_live_ones(node: Node) -> None:
    await log_events(node.svc, "u1", 30)
    conn = await connect(node, since=0)
    await notify(node.svc, "u1")
    got = await frames(conn, 32)
    assert [f["seq"] for f in got] == [None, *range(1, 32)]
    assert got[1]["data"] == {"i": 0} and got[31]["type"] == "notification.created"
    await node.detach(conn)


async def test_a_replay_larger_than_the_outbox_flows_through_it(settings_env: Any) -> None:
    async with running_app(**settings_env, outbox_max_events=8) as app:
        node: Node = app.state.node
        await log_events(node.svc, "u1", 40)
        conn = await connect(node, since=0)
        got = await frames(conn, 41)
        assert [f["seq"] for f in got[1:]] == list(range(1, 41))
        assert not conn.closed
        await node.detach(conn)


@pytest.mark.parametrize(
    ("since", "head", "first_kept", "expected"),
    [
        (None, 7, 1, (7, None)),
        (3, 7, 1, (3, None)),
        (0, 7, 1, (0, None)),
        (7, 7, 1, (7, None)),
        (8, 7, 1, (7, "unknown_position")),
        (2, 7, 5, (7, "history_pruned")),
        (4, 7, 5, (4, None)),
        (3, 7, None, (7, "history_pruned")),
        (7, 7, None, (7, None)),
        (0, 0, None, (0, None)),
    ],
)
def test_start_point(
    since: int | None, head: int, first_kept: int | None, expected: tuple[int, str | None]
) -> None:
    assert start_point(since, head, first_kept) == expected


async def test_since_older_than_the_kept_history_gets_resync(node: Node) -> None:
    await log_events(node.svc, "u1", 10)
    await node.svc.pool.execute("DELETE FROM user_events WHERE user_id = 'u1' AND seq <= 5")
    conn = await connect(node, since=2)
    await notify(node.svc, "u1")
    hello, resync, event = await frames(conn, 3)
    assert resync == {"type": "resync", "seq": None, "data": {"reason": "history_pruned"}}
    assert event["seq"] == 11
    await node.detach(conn)


async def test_since_ahead_of_the_log_gets_resync(node: Node) -> None:
    conn = await connect(node, since=5)
    hello, resync = await frames(conn, 2)
    assert resync["data"]["reason"] == "unknown_position"
    await node.detach(conn)


async def test_a_skipped_seq_is_filled_from_the_event_log(node: Node) -> None:
    conn = await connect(node)
    await frames(conn, 1)
    events = await log_events(node.svc, "u1", 3)
    await node.svc.publish(events[2:])  # 1 and 2 were never published
    got = await frames(conn, 3)
    assert [f["seq"] for f in got] == [1, 2, 3]
    assert counted(node.svc, "gap_fills") == 1
    await node.svc.publish(events[:2])  # late duplicates are dropped
    await notify(node.svc, "u1")
    [event] = await frames(conn, 1)
    assert event["seq"] == 4
    await node.detach(conn)


async def test_concurrent_creates_arrive_consecutively(node: Node) -> None:
    conn = await connect(node)
    await frames(conn, 1)
    await asyncio.wait_for(
        asyncio.gather(*(notify(node.svc, "u1", f"n{i}") for i in range(50))), T
    )
    got = await frames(conn, 50)
    assert [f["seq"] for f in got] == list(range(1, 51))
    await node.detach(conn)


async def test_after_a_broker_reconnect_every_connection_reads_the_log(node: Node) -> None:
    conn = await connect(node)
    await frames(conn, 1)
    await log_events(node.svc, "u1", 2)  # committed while "the subscription was dead"
    await asyncio.wait_for(node.on_reconnect(), T)
    got = await frames(conn, 2)
    assert [f["seq"] for f in got] == [1, 2]
    await node.detach(conn)


async def test_the_user_channel_is_subscribed_with_the_first_and_dropped_with_the_last(
    node: Node,
) -> None:
    channels = node.svc.broker._channels  # type: ignore[attr-defined]
    a = await connect(node)
    b = await connect(node)
    assert user_channel("u1") in channels and BROADCAST in channels
    await node.detach(a)
    assert user_channel("u1") in channels
    await node.detach(b)
    await node.detach(b)  # idempotent
    assert user_channel("u1") not in channels
    assert len(node.registry) == 0 and node.registry.guards == 0


async def test_quick_reconnects_never_leave_a_connection_unsubscribed(node: Node) -> None:
    channels = node.svc.broker._channels  # type: ignore[attr-defined]

    async def flap() -> None:
        for _ in range(20):
            conn = await connect(node)
            await node.detach(conn)

    stay = await connect(node)
    await asyncio.wait_for(asyncio.gather(flap(), flap()), T)
    assert user_channel("u1") in channels
    await node.detach(stay)
    assert user_channel("u1") not in channels


async def test_broadcasts_reach_every_connection_and_count_each_delivery(node: Node) -> None:
    a, b, c = await connect(node, "u1"), await connect(node, "u2"), await connect(node, "u2")
    before = counted(node.svc, "events_delivered")
    await node.svc.broadcast("announcement.created", {"id": 1})
    for conn in (a, b, c):
        hello, event = await frames(conn, 2)
        assert event == {"type": "announcement.created", "seq": None, "data": {"id": 1}}
    assert counted(node.svc, "events_delivered") == before + 3
    await notify(node.svc, "u2")  # one user's event: each of their two connections
    for conn in (b, c):
        [event] = await frames(conn, 1)
        assert event["type"] == "notification.created"
    assert counted(node.svc, "events_delivered") == before + 5
    for conn in (a, b, c):
        await node.detach(conn)


async def test_fan_out_forwards_the_bytes_it_never_parses(node: Node) -> None:
    conn = await connect(node)
    [hello] = await frames(conn, 1)
    opaque = b"not JSON: fan-out takes the seq from beside the bytes"
    node.on_message(user_channel("u1"), hello["data"]["last_seq"] + 1, opaque)
    assert await asyncio.wait_for(conn.outbox.get(), T) is opaque
    assert conn.last_seq == hello["data"]["last_seq"] + 1
    await node.detach(conn)


async def test_sse_connections_share_one_sse_block_per_event(node: Node) -> None:
    a, b = node.connection("u1", "sse", None), node.connection("u1", "sse", None)
    ws = node.connection("u1", "ws", None)
    for conn in (a, b, ws):
        await asyncio.wait_for(node.attach(conn, None), T)
        assert await asyncio.wait_for(conn.outbox.get(), T) is not None  # hello
    frame = encode("typing", None, {"user_id": "u2"})
    node.on_message(user_channel("u1"), None, frame)
    got = [await asyncio.wait_for(conn.outbox.get(), T) for conn in (a, b, ws)]
    assert got[0] == b'event: typing\ndata: {"user_id":"u2"}\n\n'
    assert got[0] is got[1]
    assert got[2] is frame
    for conn in (a, b, ws):
        await node.detach(conn)


async def test_a_connection_that_falls_behind_is_closed_as_slow(settings_env: Any) -> None:
    async with running_app(**settings_env, outbox_max_events=5) as app:
        node: Node = app.state.node
        conn = await connect(node)
        for _ in range(5):
            await node.svc.broker.publish(user_channel("u1"), encode("typing", None, {}))
        assert conn.outbox.close_code == Close.TOO_SLOW
        assert conn.outbox.nbytes == 0 and len(conn.outbox) == 0
        assert counted(node.svc, "slow_client_disconnects") == 1
        await node.detach(conn)
        assert len(node.registry) == 0


async def test_an_expired_token_closes_its_connection_with_4401(app: Any) -> None:
    node = Node(app.state.services, expiry_leeway=0)
    conn = node.connection("u1", "test", expires_at=time.time() + 0.2)
    await asyncio.wait_for(node.attach(conn, None), T)
    await asyncio.wait_for(asyncio.shield(conn.outbox.closed_future), T)
    assert conn.outbox.close_code == Close.UNAUTHORIZED
    await node.detach(conn)


async def test_expiry_allows_the_token_leeway(node: Node) -> None:
    conn = node.connection("u1", "test", expires_at=time.time() - 25)
    await asyncio.wait_for(node.attach(conn, None), T)
    assert conn.expiry is not None and not conn.closed
    assert 3 < conn.expiry.when() - asyncio.get_running_loop().time() <= 5.1
    await node.detach(conn)
    assert conn.expiry is None


async def test_drain_closes_everything_with_1001_and_refuses_newcomers(node: Node) -> None:
    conns = [await connect(node, f"u{i}") for i in range(5)]

    async def transport(conn: Connection) -> None:  # what ws/sse do when closed
        await conn.outbox.closed_future
        await node.detach(conn)

    tasks = [asyncio.create_task(transport(c)) for c in conns]
    await asyncio.wait_for(node.drain(1.0), T)
    await asyncio.wait_for(asyncio.gather(*tasks), T)
    assert {c.outbox.close_code for c in conns} == {Close.GOING_AWAY}
    assert len(node.registry) == 0
    with pytest.raises(Unavailable):
        await connect(node)
