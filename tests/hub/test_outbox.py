"""The bounded per-connection outbox."""

from __future__ import annotations

import asyncio

from hub.outbox import Outbox

T = 5.0


async def test_frames_come_out_in_order() -> None:
    box = Outbox(10, 1024)
    assert box.put(b"a") and box.put(b"bb")
    assert (len(box), box.nbytes) == (2, 3)
    assert await asyncio.wait_for(box.get(), T) == b"a"
    assert await asyncio.wait_for(box.get(), T) == b"bb"
    assert (len(box), box.nbytes) == (0, 0)


async def test_get_waits_for_a_put() -> None:
    box = Outbox(10, 1024)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()
    box.put(b"x")
    assert await asyncio.wait_for(getter, T) == b"x"


async def test_overflow_by_count_drops_everything_and_refuses_more() -> None:
    box = Outbox(2, 1024)
    assert box.put(b"1") and box.put(b"2")
    assert not box.put(b"3")
    assert box.overflowed
    assert (len(box), box.nbytes) == (0, 0)
    assert not box.put(b"4")


async def test_overflow_by_bytes() -> None:
    box = Outbox(100, 1024)
    assert box.put(b"x" * 1000)
    assert not box.put(b"y" * 25)
    assert box.overflowed and box.nbytes == 0


async def test_close_wakes_the_writer_with_none_and_keeps_the_first_code() -> None:
    box = Outbox(10, 1024)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put(b"queued")  # consumed by the getter before the close below
    assert await asyncio.wait_for(getter, T) == b"queued"
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert box.close(4008, "too slow")
    assert not box.close(1001)
    assert await asyncio.wait_for(getter, T) is None
    assert (box.close_code, box.close_reason) == (4008, "too slow")
    assert box.closed_future.done()


async def test_close_drops_queued_frames_and_later_puts() -> None:
    box = Outbox(10, 1024)
    box.put(b"a")
    box.close(1001)
    assert (len(box), box.nbytes) == (0, 0)
    assert not box.put(b"b")
    assert await asyncio.wait_for(box.get(), T) is None


async def test_a_cancelled_get_leaves_the_outbox_usable() -> None:
    box = Outbox(10, 1024)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    getter.cancel()
    await asyncio.wait({getter})
    box.put(b"after")
    assert await asyncio.wait_for(box.get(), T) == b"after"


async def test_wait_room_returns_once_the_writer_drained_half() -> None:
    box = Outbox(4, 1024)
    for frame in (b"1", b"2", b"3", b"4"):
        box.put(frame)
    assert not box.has_room
    waiter = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    await box.get()
    await asyncio.sleep(0)
    assert not waiter.done()
    await box.get()
    await asyncio.wait_for(waiter, T)


async def test_wait_room_returns_when_closed() -> None:
    box = Outbox(2, 1024)
    box.put(b"1")
    box.put(b"2")
    waiter = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0)
    box.close(4008)
    await asyncio.wait_for(waiter, T)


async def test_close_with_a_last_frame_sends_that_frame_alone_before_ending() -> None:
    box = Outbox(max_events=10, max_bytes=1000)
    for frame in (b"a", b"b"):
        assert box.put(frame)
    assert box.close(1008, "too many frames", last=b"why")
    assert not box.put(b"later")
    assert await asyncio.wait_for(box.get(), 1) == b"why"
    assert await asyncio.wait_for(box.get(), 1) is None
    assert (box.close_code, box.close_reason) == (1008, "too many frames")


async def test_the_sink_takes_a_frame_only_while_the_writer_waits_with_nothing_queued() -> None:
    box = Outbox(10, 1024)
    written: list[bytes] = []
    accept = True

    def sink(frame: bytes) -> bool:
        if accept:
            written.append(frame)
        return accept

    box.sink = sink
    assert box.put(b"queued") and written == []  # no writer waiting: queued
    assert await asyncio.wait_for(box.get(), T) == b"queued"
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert box.put(b"direct") and written == [b"direct"] and len(box) == 0
    accept = False  # e.g. the transport is paused: the frame waits for the writer
    assert box.put(b"later") and written == [b"direct"]
    assert await asyncio.wait_for(getter, T) == b"later"


async def test_the_sink_is_not_used_while_a_frame_is_queued_so_order_holds() -> None:
    box = Outbox(10, 1024)
    written: list[bytes] = []
    accept = False  # the transport is paused: the first frame is queued for the writer

    def sink(frame: bytes) -> bool:
        if accept:
            written.append(frame)
        return accept

    box.sink = sink
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert box.put(b"first")  # queued; the writer is woken but has not run yet
    accept = True  # the transport takes more again
    assert box.put(b"second") and written == []  # behind "first", not before it
    assert await asyncio.wait_for(getter, T) == b"first"
    assert await asyncio.wait_for(box.get(), T) == b"second"


async def test_a_closed_outbox_never_hands_a_frame_to_the_sink() -> None:
    box = Outbox(10, 1024)
    written: list[bytes] = []
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.sink = lambda frame: written.append(frame) is None
    box.close(4008, "slow")
    assert not box.put(b"after close") and written == []
    assert await asyncio.wait_for(getter, T) is None
