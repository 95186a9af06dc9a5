"""One live client on this instance, whatever its transport: resume position and ordering.

A connection is either *live* – a frame with the next ``seq`` goes straight to its
outbox – or *catching up*: frames are held in a bounded buffer while the node reads
the missing range from the event log, then the buffer is merged in ``seq`` order.
No I/O happens here; the node runs the catch-up and the transport (WebSocket or SSE)
runs the writer.
"""

from __future__ import annotations

import asyncio
import enum

from hub.errors import InvalidInput
from hub.outbox import Outbox

MAX_SEQ = 2**63 - 1


class Close(enum.IntEnum):
    """WebSocket close codes of the live protocol; SSE simply ends the stream."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the instance is draining: reconnect (with since) elsewhere
    POLICY = 1008  # the client kept sending frames over its rate limit
    TOO_BIG = 1009  # a client frame over the size limit
    INTERNAL = 1011
    TRY_AGAIN = 1013  # a dependency (database, broker) failed: reconnect with since
    BAD_REQUEST = 4400  # the connect request was malformed (since)
    UNAUTHORIZED = 4401  # no, bad or expired token
    FORBIDDEN = 4403  # origin not allowed, or an API key instead of a user token
    TOO_SLOW = 4008  # fell too far behind: reconnect with since
    TOO_MANY = 4429  # too many connection attempts from the address, or connections of the user


class Verdict(enum.Enum):
    """What happened to an offered frame, so the node knows what to do next."""

    DELIVERED = "delivered"  # queued to the outbox
    HELD = "held"  # buffered while catching up, or a duplicate dropped
    GAP = "gap"  # a seq was skipped: the connection now catches up from the event log
    SLOW = "slow"  # outbox or buffer overflowed: close the connection (4008)
    LIVE = "live"  # (go_live) the buffer merged cleanly


class Connection:
    """A client of ``user_id`` on one transport; the node owns its lifecycle.

    ``last_seq`` is the seq of the last event queued to the client. Until the node
    calls ``go_live`` after its first catch-up (the replay at connect), every frame is
    held, so ``hello`` is always the first frame out.
    """

    __slots__ = (
        "user_id", "transport", "expires_at", "outbox", "last_seq", "start_seq",
        "catching_up", "greeted", "recheck", "task", "expiry",
        "_held", "_ephemeral", "_held_bytes", "__weakref__",
    )

    def __init__(
        self,
        user_id: str,
        transport: str,
        *,
        max_events: int,
        max_bytes: int,
        expires_at: float | None = None,
    ) -> None:
        self.user_id = user_id
        self.transport = transport
        self.expires_at = expires_at
        self.outbox = Outbox(max_events, max_bytes)
        self.last_seq = 0
        #: The seq the stream continues after once ``hello`` is out (``since`` or the head).
        self.start_seq = 0
        self.catching_up = True
        self.greeted = False
        #: Set when the event log must be read again before going live (a broker reconnect).
        self.recheck = False
        self.task: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self._held: dict[int, bytes] = {}
        self._ephemeral: list[bytes] = []
        self._held_bytes = 0

    @property
    def closed(self) -> bool:
        return self.outbox.closed

    def close(self, code: int, reason: str = "", last: bytes | None = None) -> bool:
        """End the connection with ``code`` (after ``last``, if given); True if this call
        ended it."""
        closed = self.outbox.close(code, reason, last)
        if closed:
            self._drop_held()
            if self.expiry is not None:
                self.expiry.cancel()
                self.expiry = None
        return closed

    def send(self, frame: bytes) -> Verdict:
        """Queue a reply or other frame outside the event order (hello, pong, ack, error)."""
        return Verdict.DELIVERED if self.outbox.put(frame) else Verdict.SLOW

    def offer(self, seq: int | None, frame: bytes) -> Verdict:
        """Offer a frame from the broker; ``seq`` None means ephemeral."""
        if self.closed:
            return Verdict.HELD
        if seq is None:
            if self.greeted:
                return self.send(frame)
            return self._hold(None, frame)
        if self.catching_up:
            return Verdict.HELD if seq <= self.last_seq else self._hold(seq, frame)
        if seq <= self.last_seq:
            return Verdict.HELD  # a duplicate: already delivered from the event log
        if seq == self.last_seq + 1:
            return self.deliver(seq, frame)
        self.catching_up = True
        verdict = self._hold(seq, frame)
        return Verdict.GAP if verdict is Verdict.HELD else verdict

    def deliver(self, seq: int, frame: bytes) -> Verdict:
        """Queue event ``seq`` (the next one, from the log or live) and advance."""
        if not self.outbox.put(frame):
            return Verdict.SLOW
        self.last_seq = seq
        return Verdict.DELIVERED

    def go_live(self) -> Verdict:
        """Merge held frames in seq order: LIVE, GAP (still missing one) or SLOW.

        Synchronous on purpose: nothing can be offered between the merge and the switch
        to live, so no frame slips past the buffer.
        """
        ephemeral, self._ephemeral = self._ephemeral, []
        for frame in ephemeral:
            self._held_bytes -= len(frame)
            if not self.outbox.put(frame):
                return Verdict.SLOW
        for seq in sorted(self._held):
            frame = self._held.pop(seq)
            self._held_bytes -= len(frame)
            if seq <= self.last_seq:
                continue
            if seq != self.last_seq + 1:
                self._held[seq] = frame  # put back: the gap is filled from the log first
                self._held_bytes += len(frame)
                return Verdict.GAP
            if self.deliver(seq, frame) is Verdict.SLOW:
                return Verdict.SLOW
        self.catching_up = False
        return Verdict.LIVE

    @property
    def held(self) -> int:
        """Frames buffered while catching up."""
        return len(self._held) + len(self._ephemeral)

    def _hold(self, seq: int | None, frame: bytes) -> Verdict:
        outbox = self.outbox
        if self.held >= outbox.max_events or self._held_bytes + len(frame) > outbox.max_bytes:
            self._drop_held()
            return Verdict.SLOW
        if seq is None:
            self._ephemeral.append(frame)
        elif seq in self._held:
            return Verdict.HELD
        else:
            self._held[seq] = frame
        self._held_bytes += len(frame)
        return Verdict.HELD

    def _drop_held(self) -> None:
        self._held.clear()
        self._ephemeral.clear()
        self._held_bytes = 0


def parse_since(raw: str | None, name: str = "since") -> int | None:
    """A resume position from a query parameter or header: None if absent, else an int >= 0.

    InvalidInput for anything else (a sign, spaces, non-ASCII digits, beyond bigint).
    """
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise InvalidInput(
            f"{name} must be a non-negative integer",
            errors=[{"loc": [name], "msg": "must be a non-negative integer"}],
        )
    return int(raw)


def start_point(since: int | None, head: int, first_kept: int | None) -> tuple[int, str | None]:
    """Where a connection's stream starts, and why it must resync (None if it need not)."""
    if since is None:
        return head, None
    if since > head:
        return head, "unknown_position"
    if first_kept is None:
        return (since, None) if since == head else (head, "history_pruned")
    if since < first_kept - 1:
        return head, "history_pruned"
    return since, None
