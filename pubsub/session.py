"""What RedisBroker and ClusterBroker share: the wire format and their subscriber sessions.

A message on the wire is a header line, the decimal ``seq`` (empty for None) and
``\n``, then the message bytes (``wire``); the receiver strips the header and hands
the seq beside the bytes, so no subscriber decodes the message to learn its position.
That is version 1 of the format (``WIRE_VERSION``). A later version may add fields to
the header line after the seq, each after a space (``42 v=2 …``); this one reads the
seq and ignores them, so an instance keeps delivering what a newer one publishes.

A ``Session`` is one subscriber connection with its reader and prober tasks.
``SessionBroker`` is the part of both brokers that keeps sessions: the wanted channels,
(un)subscribes confirmed within ``timeout``, delivery of what a session reads, a probe
per session, and the supervisor that replaces a lost session with jittered exponential
backoff, then awaits ``on_reconnect``. A broker says how it sends a command, reads a
message, waits for a loss and opens a new session.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.utils import HIREDIS_AVAILABLE, check_protocol_version

from pubsub.broker import MessageHandler, ReconnectHandler

#: What ends a session or fails an attempt to open one (TimeoutError is an OSError);
#: on a Redis Cluster also RedisClusterException (no slot map, a slot not covered, no
#: node answering), which is no RedisError. Every pubsub module catches these.
REDIS_FAILURES = (RedisError, OSError, RedisClusterException)
#: The version of the format ``wire`` writes (module doc); it adds no field of its own.
WIRE_VERSION = 1
#: Longest header line read, newline included: a bigint seq (19 digits) and room for
#: the fields of later versions.
_MAX_HEADER = 256


def wire(seq: int | None, message: bytes) -> bytes:
    """``message`` as published on Redis: its ``seq`` header line, then the bytes."""
    return b"\n" + message if seq is None else b"%d\n" % seq + message


def unwire(data: bytes) -> tuple[int | None, bytes]:
    """``(seq, message)`` of a Redis message; ValueError if it has no valid header."""
    cut = data.find(b"\n", 0, _MAX_HEADER)
    if cut < 0:
        raise ValueError("no header")
    if cut == 0:
        return None, data[1:]
    head = data[:cut].split(b" ", 1)[0]  # fields of later versions follow a space
    if not head:
        return None, data[cut + 1 :]
    if not head.isdigit() or len(head) > 19 or (seq := int(head)) <= 0:
        raise ValueError("bad seq")
    return seq, data[cut + 1 :]


@dataclass(eq=False)
class Session:
    """One subscriber connection, its reader and prober, and (un)subscribes in flight."""

    pubsub: PubSub
    # Redis confirms every channel of every (UN)SUBSCRIBE once, in the order sent, and
    # commands are sent under the broker's lock in the order these futures are queued.
    waiters: deque[asyncio.Future[bool]] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # its reader and prober
    live: bool = False
    closing: bool = False
    reason: str = ""
    probe_seen: float = field(default_factory=time.monotonic)  # its probe's last echo
    probe_failed: bool = False  # the last probe publish failed
    dispatch: Callable[[dict[str, Any]], None] | None = None  # set by ``read``

    def __post_init__(self) -> None:
        # redis-py hands each message its parser reads as a push (RESP3, or hiredis) to
        # this handler once the connection opens, and returns what the handler returns
        # to get_message; None skips its per-message bookkeeping (a message dict,
        # metrics, a debug line formatted whatever the log level), most of redis-py's
        # cost per message. Its pure-Python RESP2 parser (``?protocol=2`` without
        # hiredis) takes no handler: its messages take the way through get_message.
        protocol = self.pubsub.connection_pool.connection_kwargs.get("protocol")
        if HIREDIS_AVAILABLE or check_protocol_version(protocol, 3):
            self.pubsub.push_handler_func = self._pushed

    def expect(self) -> asyncio.Future[bool]:
        """A future that the next confirmation not yet expected resolves."""
        self.waiters.append(asyncio.get_running_loop().create_future())
        return self.waiters[-1]

    def settle(self, confirmed: bool) -> None:
        """Resolve the oldest waiter, or (not confirmed: connection gone) all of them."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(confirmed)
            if confirmed:
                return

    def kill(self, reason: str) -> None:
        """Abandon this session; the supervisor sees its tasks end and reconnects."""
        if not self.closing:
            self.closing, self.live, self.reason = True, False, reason
            for task in self.tasks:
                task.cancel()

    def echoed(self) -> None:
        """Its probe came back."""
        self.probe_seen, self.probe_failed = time.monotonic(), False

    def healthy(self, probe_limit: float) -> bool:
        """Live, and its probe came back within ``probe_limit`` seconds."""
        fresh = time.monotonic() - self.probe_seen <= probe_limit
        return self.live and fresh and not self.probe_failed

    async def _pushed(self, response: list[Any]) -> None:
        """``_handle`` as redis-py's push handler."""
        self._handle(response)

    def _handle(self, response: list[Any]) -> None:
        """A message as the parser read it, ``[type, channel, data]``, to ``dispatch``
        in the shape get_message gives; an unsubscribed channel leaves the PubSub's
        books, as get_message would have done it."""
        kind = response[0].decode() if isinstance(response[0], bytes) else str(response[0])
        if kind in _UNSUBSCRIBED:
            pending, channels = _UNSUBSCRIBED[kind]
            if response[1] in getattr(self.pubsub, pending):
                getattr(self.pubsub, pending).remove(response[1])
                getattr(self.pubsub, channels).pop(response[1], None)
        if self.dispatch is not None:
            self.dispatch({"type": kind, "channel": response[1],
                           "data": response[2] if len(response) > 2 else None})

    async def read(self, dispatch: Callable[[dict[str, Any]], None]) -> None:
        """Hand every message to ``dispatch`` until the connection fails (or the task is
        cancelled); then the session is closing and its waiters learn it is gone."""
        self.dispatch = dispatch
        try:
            stream = _raw_stream(self.pubsub)
            if stream is not None:
                await self._read_raw(stream)  # until the connection fails
            while stream is None:
                message = await self.pubsub.get_message(timeout=None)
                if message is not None:
                    dispatch(message)
        finally:
            self.closing, self.live = True, False
            self.settle(confirmed=False)

    async def _read_raw(self, stream: asyncio.StreamReader) -> None:
        """What get_message does on a connection that only receives pushes, without its
        ten calls and three coroutines per message: the bytes of the connection's socket
        reader, parsed by a hiredis reader of this session's own, each reply to
        ``_handle``; an error reply, bytes that are not RESP or the end of the stream
        end the session. Pushes of other kinds (RESP3's maintenance notices, such as
        MOVING) are handed on and ignored, as unknown ones always were: a server that
        goes away ends the connection, or the probe notices, and the session reopens."""
        assert _hiredis is not None, "_raw_stream checks it"
        reader = _hiredis.Reader(notEnoughData=_MORE)
        while True:
            try:
                response = reader.gets()
            except _hiredis.ProtocolError as exc:  # as redis-py's InvalidResponse would
                raise RedisConnectionError(f"subscriber connection: {exc}") from exc
            if response is _MORE:
                data = await stream.read(_READ_SIZE)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                reader.feed(data)
            elif isinstance(response, Exception):
                raise RedisConnectionError(f"subscriber connection: {response}")
            else:
                self._handle(response)


#: hiredis, when redis-py reads with it (None: redis-py's own parsers, get_message).
_hiredis = importlib.import_module("hiredis") if HIREDIS_AVAILABLE else None
#: The hiredis reader's answer when it holds no whole reply yet.
_MORE = object()
#: Bytes read from a subscriber connection's socket at a time (redis-py reads 64 KiB).
_READ_SIZE = 65536


def _raw_stream(pubsub: PubSub) -> asyncio.StreamReader | None:
    """The socket reader of ``pubsub``'s connection, when ``Session._read_raw`` can read
    it in get_message's place: hiredis is installed, the connection is an asyncio
    stream (TCP, TLS or a Unix socket), redis-py's parser holds nothing it read ahead,
    replies are bytes, and no credential provider re-authenticates on the connection
    (it would read replies there too). None otherwise, or should a later redis-py keep
    these elsewhere: get_message then reads, as before (tests/pubsub checks it is not)."""
    conn = pubsub.connection
    stream = getattr(conn, "_reader", None)
    parsed = getattr(getattr(conn, "_parser", None), "_reader", None)
    if _hiredis is None or not isinstance(stream, asyncio.StreamReader):
        return None
    if parsed is None or not hasattr(parsed, "has_data") or parsed.has_data():
        return None
    if getattr(getattr(conn, "encoder", None), "decode_responses", True):
        return None
    if getattr(conn, "credential_provider", None) is not None:
        return None
    return stream


#: The PubSub's books of a channel being unsubscribed, by confirmation type: its pending
#: set, and the channels it remembers to subscribe again on a reconnect.
_UNSUBSCRIBED = {
    "unsubscribe": ("pending_unsubscribe_channels", "channels"),
    "sunsubscribe": ("pending_unsubscribe_shard_channels", "shard_channels"),
}

#: A command on the wire: its session and the future its confirmation resolves.
Sent = tuple[Session, asyncio.Future[bool]]


class SessionBroker:
    """The session keeping of a Redis broker (see the module docstring).

    A subclass sets ``_log`` and ``_name`` (for its log lines) and provides ``_send``,
    ``_lost`` and ``_reopen``; it calls ``_apply`` to (un)subscribe, ``_deliver`` for a
    message its reader dispatches, runs ``_probe`` and ``_supervise`` (as ``_supervisor``)
    as tasks, and stops by ``_halt`` first.
    """

    _log: ClassVar[logging.Logger]
    _name: ClassVar[str]

    def __init__(
        self, prefix: str, *, probe_interval: float, probe_misses: int, timeout: float
    ) -> None:
        self._prefix, self._prefix_len = prefix, len(prefix.encode())
        self._probe_interval, self._probe_limit = probe_interval, probe_interval * probe_misses
        self._timeout = timeout
        self._wanted: set[str] = set()
        # Orders (UN)SUBSCRIBE commands so the server ends in the last requested state.
        self._send_lock = asyncio.Lock()
        self._on_message: MessageHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._supervisor: asyncio.Task[None] | None = None  # runs _supervise once started

    async def _send(self, command: str, channel: str) -> Sent | None:
        """Send ``command`` for ``channel`` on the session that holds it, under the send
        lock; None when no session could take it (the next one subscribes _wanted)."""
        raise NotImplementedError

    async def _lost(self) -> None:
        """Wait for the current session to end, say why, close it; at once if none."""
        raise NotImplementedError

    async def _reopen(self) -> None:
        """Open a new session on every wanted channel, and say so; REDIS_FAILURES if not."""
        raise NotImplementedError

    async def _apply(self, command: str, channel: str) -> None:
        # Shielded so a cancelled caller neither leaves a half-written command on the
        # connection nor lets the server drift from self._wanted.
        sent = await asyncio.shield(self._send(command, channel))
        if sent is not None:
            session, waiter = sent
            try:
                await asyncio.wait_for(waiter, self._timeout)
            except TimeoutError:
                # A connection that does not answer is dead to us; reconnecting restores
                # the subscription and on_reconnect covers whatever was missed.
                session.kill(f"no confirmation of {command} {channel!r}")

    def _deliver(self, name: bytes, data: bytes) -> None:
        """Hand a message read on the wire channel ``name`` to on_message."""
        channel = name[self._prefix_len :].decode()
        # Filtering on _wanted makes unsubscribe take effect before Redis confirms.
        if self._on_message is not None and channel in self._wanted:
            try:
                seq, message = unwire(data)
            except ValueError:
                self._log.warning("dropped a malformed message on %r", channel)
                return
            try:
                self._on_message(channel, seq, message)
            except Exception:
                self._log.exception("on_message failed for channel %r", channel)

    async def _probe(
        self, session: Session, publish: Callable[[], Awaitable[Any]], where: str = ""
    ) -> None:
        """Publish the probe of ``session`` every probe interval; end (and so the session)
        when its echo is overdue. ``where`` names the connection in messages."""
        while True:
            await asyncio.sleep(self._probe_interval)
            if time.monotonic() - session.probe_seen > self._probe_limit:
                raise TimeoutError(f"probe{where} not echoed within {self._probe_limit:g}s")
            try:
                await publish()
            except REDIS_FAILURES as exc:
                session.probe_failed = True
                self._log.warning("%s probe publish%s failed: %s", self._name, where, exc)

    async def _halt(self) -> None:
        """Stop delivering and reconnecting: the first step of stopping."""
        self._on_message = None
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait({supervisor})

    async def _supervise(self) -> None:
        assert self._on_reconnect is not None
        failures = 0
        while True:
            await self._lost()
            # Jitter keeps instances that lost Redis together from returning in lockstep;
            # the cap keeps recovery after a restart within ~2 s.
            failures += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)) * random.uniform(0.5, 1))
            try:
                await self._reopen()
            except REDIS_FAILURES as exc:
                self._log.debug("%s reconnect attempt %d failed: %s", self._name, failures, exc)
                continue
            except Exception:
                # A bug must not end reconnecting for good: keep trying, but loudly.
                self._log.exception("%s reconnect attempt %d failed", self._name, failures)
                continue
            failures = 0
            try:
                await self._on_reconnect()
            except Exception:
                self._log.exception("on_reconnect failed")
