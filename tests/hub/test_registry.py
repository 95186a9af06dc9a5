"""The registry of local connections, and the connection's ordering rules (no I/O)."""

from __future__ import annotations

import asyncio

from hub.connection import Close, Connection, Verdict, parse_since
from hub.errors import InvalidInput
from hub.registry import Registry

T = 5.0


def make(user: str = "u1", max_events: int = 100, max_bytes: int = 100_000) -> Connection:
    return Connection(user, "test", max_events=max_events, max_bytes=max_bytes)


async def drain(conn: Connection) -> list[bytes]:
    out = []
    while len(conn.outbox):
        frame = await asyncio.wait_for(conn.outbox.get(), T)
        assert frame is not None
        out.append(frame)
    return out


def live(conn: Connection, last_seq: int = 0) -> Connection:
    conn.last_seq = last_seq
    conn.greeted = True
    assert conn.go_live() is Verdict.LIVE
    return conn


async def test_add_reports_the_first_and_remove_the_last_connection_of_a_user() -> None:
    reg = Registry()
    a, b, c = make("u1"), make("u1"), make("u2")
    assert reg.add(a) is True
    assert reg.add(b) is False
    assert reg.add(c) is True
    assert (len(reg), reg.users) == (3, 2)
    assert set(reg.of("u1")) == {a, b} and a in reg
    assert reg.remove(a) is False
    assert reg.remove(a) is False  # not there any more
    assert reg.remove(b) is True
    assert reg.of("u1") == () and a not in reg
    assert len(reg) == 1


async def test_guard_serialises_per_user_and_goes_away_when_unused() -> None:
    reg = Registry()
    order: list[str] = []

    async def hold(name: str, user: str) -> None:
        async with reg.guard(user):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.wait_for(
        asyncio.gather(hold("a", "u1"), hold("b", "u1"), hold("c", "u2")), T
    )
    assert order.index("a-") < order.index("b+")
    assert order.index("c+") < order.index("a-")  # another user is not blocked
    assert reg.guards == 0


async def test_held_frames_merge_in_seq_order_and_duplicates_are_dropped() -> None:
    conn = make()
    conn.last_seq = 2
    assert conn.offer(4, b"4") is Verdict.HELD
    assert conn.offer(3, b"3") is Verdict.HELD
    assert conn.offer(2, b"2") is Verdict.HELD  # already had it
    assert conn.offer(None, b"typing") is Verdict.HELD  # nothing before hello
    conn.greeted = True
    assert conn.go_live() is Verdict.LIVE
    assert await drain(conn) == [b"typing", b"3", b"4"]
    assert conn.last_seq == 4


async def test_a_skipped_seq_while_live_starts_a_catch_up() -> None:
    conn = live(make(), 5)
    assert conn.offer(6, b"6") is Verdict.DELIVERED
    assert conn.offer(6, b"6") is Verdict.HELD
    assert conn.offer(8, b"8") is Verdict.GAP
    assert conn.catching_up
    assert conn.offer(9, b"9") is Verdict.HELD
    assert conn.offer(None, b"e") is Verdict.DELIVERED  # ephemeral: not ordered
    assert conn.go_live() is Verdict.GAP  # 7 still missing
    assert conn.deliver(7, b"7") is Verdict.DELIVERED
    assert conn.go_live() is Verdict.LIVE
    assert await drain(conn) == [b"6", b"e", b"7", b"8", b"9"]


async def test_holding_too_much_while_catching_up_is_slow() -> None:
    conn = make(max_events=3)
    for seq in (5, 6, 7):
        assert conn.offer(seq, b"x") is Verdict.HELD
    assert conn.offer(8, b"x") is Verdict.SLOW
    assert conn.held == 0


async def test_a_full_outbox_is_slow() -> None:
    conn = live(make(max_events=2))
    assert conn.offer(1, b"1") is Verdict.DELIVERED
    assert conn.offer(2, b"2") is Verdict.DELIVERED
    assert conn.offer(3, b"3") is Verdict.SLOW
    assert conn.outbox.nbytes == 0


async def test_close_frees_everything_and_keeps_its_code() -> None:
    conn = make()
    conn.offer(3, b"3")
    assert conn.close(Close.TOO_SLOW, "too slow")
    assert not conn.close(Close.NORMAL)
    assert conn.held == 0 and conn.outbox.close_code == 4008
    assert conn.offer(4, b"4") is Verdict.HELD and conn.held == 0


def test_since_is_a_non_negative_integer_or_absent() -> None:
    assert parse_since(None) is None and parse_since("") is None
    assert parse_since("0") == 0 and parse_since("42") == 42
    for bad in ("-1", "1.5", "abc", " 1", "٣", "99999999999999999999", "9223372036854775808"):
        try:
            parse_since(bad)
        except InvalidInput:
            continue
        raise AssertionError(f"{bad!r} was accepted")
