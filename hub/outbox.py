"""The bounded per-connection queue of encoded frames between fan-out and one writer.

Fan-out must never wait for a client, so ``put`` never blocks: a connection that
falls further behind than the bound overflows, loses its queued frames at once (the
memory goes back) and is closed as too slow; the client resumes with ``since``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Outbox:
    """Frames waiting for one connection's writer, bounded by count and by bytes.

    One producer side (``put``, synchronous, any number of callers) and one consumer
    (``get``, the connection's single writer task). ``close`` ends the connection:
    queued frames are dropped and the writer is woken to close its transport with
    ``close_code``.
    """

    __slots__ = (
        "max_events", "max_bytes", "_frames", "_bytes", "_waiter", "_room_waiter",
        "overflowed", "close_code", "close_reason", "closed_future", "sink",
    )

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        #: None while empty: an idle connection does not keep a deque (~600 bytes).
        self._frames: deque[bytes] | None = None
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.close_code: int | None = None
        self.close_reason = ""
        #: Resolved by ``close``; transports wait on it beside their reader and writer.
        self.closed_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Writes a frame to the connection at once, or says it cannot (False). Used
        #: only while the writer waits with nothing queued, so the order is kept, and
        #: it saves waking the writer task for every frame of a fan-out.
        self.sink: Callable[[bytes], bool] | None = None

    def __len__(self) -> int:
        return len(self._frames) if self._frames else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the frames queued now."""
        return self._bytes

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False (and nothing queued) once closed or when it would overflow.

        Overflow marks the outbox ``overflowed`` and drops everything queued; the caller
        closes the connection (4008) – the outbox never decides why it ends.
        """
        if self.closed or self.overflowed:
            return False
        frames = self._frames
        if frames is None and self._waiter is not None and self.sink is not None \
                and self.sink(frame):
            return True  # written; the writer waits on
        size = len(frame)
        if frames is None:
            frames = self._frames = deque()
        if len(frames) >= self.max_events or self._bytes + size > self.max_bytes:
            self.overflowed = True
            self._clear()
            return False
        frames.append(frame)
        self._bytes += size
        self._wake()
        return True

    async def get(self) -> bytes | None:
        """The next frame, waiting for one; None once the outbox is closed."""
        while not self._frames:
            if self.closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        frames = self._frames
        assert frames is not None  # not empty, per the loop above
        frame = frames.popleft()
        if not frames:
            self._frames = None
        self._bytes -= len(frame)
        if self._room_waiter is not None and self.has_room:
            self._wake_room()
        return frame

    async def wait_room(self) -> None:
        """Wait until at most half full (or closed).

        For producers that may wait – a replay from the event log – so that a large
        replay flows through the bound instead of overflowing it. Fan-out never waits.
        """
        while not self.closed and not self.has_room:
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiter = waiter
            try:
                await waiter
            finally:
                self._room_waiter = None

    @property
    def has_room(self) -> bool:
        """At most half full: a waiting producer may go on."""
        return len(self) <= self.max_events // 2 and self._bytes <= self.max_bytes // 2

    def close(self, code: int, reason: str = "", last: bytes | None = None) -> bool:
        """Close with ``code``; True if this call closed it (later calls change nothing).

        What was queued is dropped; ``last`` (a small frame saying why) is the one frame
        still sent before the close.
        """
        if self.closed:
            return False
        self.close_code, self.close_reason = code, reason
        self._clear()
        if last is not None:
            self._frames, self._bytes = deque([last]), len(last)
        self._wake()
        self._wake_room()
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        return True

    def _clear(self) -> None:
        self._frames = None
        self._bytes = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_room(self) -> None:
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
