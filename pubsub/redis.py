"""The Redis broker: fan-out between hub instances over Redis pub/sub.

Wire layout: logical channel ``c`` is the Redis channel ``{prefix}c``; each instance also
subscribes ``{prefix}probe:<instance id>`` and publishes to it every ``probe_interval``
to prove, end to end, that its subscriber connection still receives. Nothing here
queues: Redis drops a subscriber that falls too far behind, which is one more reconnect.

A message on the wire is a header line, the decimal ``seq`` (empty for None) and
``\n``, then the message bytes (``wire``); the receiver strips the header and hands
the seq beside the bytes, so no subscriber decodes the message to learn its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from pubsub.broker import MessageHandler, ReconnectHandler
from pubsub.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

#: What ends a session or fails an attempt to open one (TimeoutError is an OSError);
#: on a Redis Cluster also RedisClusterException (no slot map, a slot not covered, no
#: node answering), which is no RedisError. Every pubsub module catches these.
REDIS_FAILURES = (RedisError, OSError, RedisClusterException)
_FAILURES = REDIS_FAILURES
#: Longest header: 19 digits (a bigint seq) and the newline.
_MAX_HEADER = 20
#: Publishes a batch in one command: ARGV is channel, message, channel, message, ...
#: One EVALSHA costs the client a fraction of N pipelined PUBLISHes (no per-command
#: packing and reply parsing in redis-py); subscribers see the same N messages.
_PUBLISH_ALL = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""
#: Messages per script call, so one call never holds Redis for long.
_SCRIPT_CHUNK = 1000


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
    head = data[:cut]
    if not head.isdigit() or (seq := int(head)) <= 0:
        raise ValueError("bad seq")
    return seq, data[cut + 1 :]


def command_client(url: str, timeout: float, max_connections: int) -> Redis:
    """A client for commands (not subscriptions) on a bounded pool: ``timeout`` bounds
    connecting, waiting for a pooled connection and each command."""
    # One immediate retry, on connection errors only, heals pooled connections that
    # went stale across a Redis restart without risking a duplicate after a timeout.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        retry=retry,
    )
    return Redis.from_pool(pool)


@dataclass(eq=False)
class _Session:
    """One subscriber connection, its reader and prober, and (un)subscribes in flight."""

    pubsub: PubSub
    # Redis confirms every channel of every (UN)SUBSCRIBE once, in the order sent, and
    # commands are sent under the broker's lock in the order these futures are queued.
    waiters: deque[asyncio.Future[bool]] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # its reader and prober
    live: bool = False
    closing: bool = False
    reason: str = ""

    def expect(self) -> asyncio.Future[bool]:
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


#: A command on the wire: its session and the future its confirmation resolves.
_Sent = tuple[_Session, asyncio.Future[bool]]


class RedisBroker:
    """Broker over Redis pub/sub that survives Redis restarts and reports its health.

    A session (one subscriber connection, one reader task) ends on a connection error, a
    missing probe echo or an unconfirmed (un)subscribe; the broker then reconnects with
    jittered exponential backoff, re-subscribes every wanted channel, awaits on_reconnect.
    Publishes use a separate bounded pool. ``timeout`` bounds connecting, each command and
    each confirmation; ``probe_interval * probe_misses`` bounds trust in a silent connection.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        probe_interval: float = 1.0,
        probe_misses: int = 3,
        timeout: float = 2.0,
        max_connections: int = 16,
    ) -> None:
        self._url, self._prefix, self._prefix_len = url, prefix, len(prefix.encode())
        self._probe_wire = f"{prefix}probe:{uuid.uuid4().hex}".encode()
        self._probe_interval, self._probe_limit = probe_interval, probe_interval * probe_misses
        self._timeout, self._max_connections = timeout, max_connections
        self._wanted: set[str] = set()
        self._session: _Session | None = None
        # Orders (UN)SUBSCRIBE commands so the server ends in the last requested state.
        self._send_lock = asyncio.Lock()
        self._probe_seen, self._probe_failed = 0.0, False
        self._on_message: MessageHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._subscriber: Redis | None = None
        self._publisher: Redis | None = None
        self._script: AsyncScript | None = None
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        """Subscribe and begin delivering; raises ``BrokerUnavailable`` if Redis is down."""
        if self._subscriber is not None:
            raise RuntimeError("RedisBroker already started")
        self._on_message, self._on_reconnect = on_message, on_reconnect
        common: dict[str, Any] = {"socket_connect_timeout": self._timeout, "socket_keepalive": True}
        # No hidden retries: every lost subscriber connection must surface here so that
        # on_reconnect follows it. Reads block with no timeout; the probe spots silence.
        self._subscriber = Redis.from_url(
            self._url, socket_timeout=None, retry=Retry(NoBackoff(), 0), **common
        )
        self._publisher = command_client(self._url, self._timeout, self._max_connections)
        # EVALSHA, loading the script again (EVAL) after a Redis restart flushed it.
        self._script = self._publisher.register_script(_PUBLISH_ALL)
        try:
            await self._open_session()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, _FAILURES):
                raise BrokerUnavailable(f"cannot subscribe on Redis: {exc}") from exc
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-broker")

    async def stop(self) -> None:
        """Stop reconnecting and close every connection; prompt even when Redis is down."""
        self._on_message = None
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait({supervisor})
        if self._session is not None:
            await self._close_session(self._session)
        self._wanted.clear()
        for client in (self._subscriber, self._publisher):
            if client is not None:
                with contextlib.suppress(*_FAILURES):
                    await client.aclose()
        self._subscriber = self._publisher = None

    async def publish(self, channel: str, message: bytes, seq: int | None = None) -> None:
        """Publish to every subscribed instance; raises ``BrokerUnavailable`` on failure."""
        if self._publisher is None:
            raise BrokerUnavailable("RedisBroker is not started")
        try:
            await self._publisher.publish(self._prefix + channel, wire(seq, message))
        except _FAILURES as exc:
            raise BrokerUnavailable(f"publish to {channel!r} failed: {exc}") from exc

    async def publish_many(self, messages: list[tuple[str, int | None, bytes]]) -> None:
        """Publish every message, in order, in one round trip per 1000 (a Lua script;
        pipelined PUBLISHes where scripts are not allowed); raises ``BrokerUnavailable``
        on failure, when some of them may have gone out."""
        if self._publisher is None:
            raise BrokerUnavailable("RedisBroker is not started")
        args = [part for channel, seq, message in messages
                for part in (self._prefix + channel, wire(seq, message))]
        try:
            if self._script is None:
                pipe = self._publisher.pipeline(transaction=False)
                for i in range(0, len(args), 2):
                    pipe.publish(args[i], args[i + 1])
                await pipe.execute()
                return
            for i in range(0, len(args), 2 * _SCRIPT_CHUNK):
                await self._script(args=args[i:i + 2 * _SCRIPT_CHUNK])
        except ResponseError as exc:
            if self._script is None or "NOSCRIPT" in str(exc):
                raise BrokerUnavailable(f"publishing failed: {exc}") from exc
            # An ACL without EVAL/EVALSHA, or scripting switched off: pipeline instead.
            logger.warning("publishing with a Lua script failed (%s); using pipelined "
                           "PUBLISH from now on", exc)
            self._script = None
            await self.publish_many(messages)
        except _FAILURES as exc:
            raise BrokerUnavailable(f"publishing {len(messages)} message(s) failed: {exc}") from exc

    async def subscribe(self, channel: str) -> None:
        """Return once the subscription is active, or at once while Redis is unreachable:
        it is then restored on reconnect, which is followed by ``on_reconnect``."""
        self._wanted.add(channel)
        await self._apply("SUBSCRIBE", channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` at once; return once Redis confirmed (or is gone)."""
        self._wanted.discard(channel)
        await self._apply("UNSUBSCRIBE", channel)

    @property
    def healthy(self) -> bool:
        """Subscribed, and this instance's own probe came back recently."""
        session, fresh = self._session, time.monotonic() - self._probe_seen <= self._probe_limit
        return session is not None and session.live and fresh and not self._probe_failed

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

    async def _send(self, command: str, channel: str) -> _Sent | None:
        async with self._send_lock:
            session = self._session
            if session is None or session.closing:
                return None  # the next session subscribes from self._wanted
            waiter, wire = session.expect(), (self._prefix + channel).encode()
            pubsub = session.pubsub
            send = pubsub.subscribe(wire) if command == "SUBSCRIBE" else pubsub.unsubscribe(wire)
            try:
                await asyncio.wait_for(send, self._timeout)
            except _FAILURES as exc:
                session.kill(f"{command} failed: {exc}")
            return session, waiter

    async def _open_session(self) -> None:
        assert self._subscriber is not None
        session = _Session(self._subscriber.pubsub())
        try:
            async with self._send_lock:
                wires = [self._probe_wire, *((self._prefix + c).encode() for c in self._wanted)]
                waiters = [session.expect() for _ in wires]
                await asyncio.wait_for(session.pubsub.subscribe(*wires), self._timeout)
                session.tasks.add(asyncio.create_task(self._read(session), name="redis-reader"))
                self._session = session
            if not all(await asyncio.wait_for(asyncio.gather(*waiters), self._timeout)):
                raise RedisConnectionError(session.reason or "connection lost while subscribing")
        except BaseException:
            await self._close_session(session)
            raise
        self._probe_seen, self._probe_failed = time.monotonic(), False
        session.live = True
        session.tasks.add(asyncio.create_task(self._probe(), name="redis-probe"))

    async def _close_session(self, session: _Session) -> None:
        session.closing, session.live = True, False
        if self._session is session:
            self._session = None
        for task in session.tasks:
            task.cancel()
        # return_exceptions retrieves them: the supervisor has already logged the reason.
        await asyncio.gather(*session.tasks, return_exceptions=True)
        session.settle(confirmed=False)
        with contextlib.suppress(*_FAILURES):  # the connection is thrown away anyway
            await session.pubsub.aclose()

    async def _read(self, session: _Session) -> None:
        try:
            while True:
                message = await session.pubsub.get_message(timeout=None)
                if message is not None:
                    self._dispatch(session, message)
        finally:
            session.closing, session.live = True, False
            session.settle(confirmed=False)

    def _dispatch(self, session: _Session, message: dict[str, Any]) -> None:
        kind, wire = message["type"], message["channel"]
        if kind in ("subscribe", "unsubscribe"):
            session.settle(confirmed=True)
        elif kind == "message" and wire == self._probe_wire:
            self._probe_seen, self._probe_failed = time.monotonic(), False
        elif kind == "message":
            channel = wire[self._prefix_len :].decode()
            # Filtering on _wanted makes unsubscribe take effect before Redis confirms.
            if self._on_message is not None and channel in self._wanted:
                try:
                    seq, data = unwire(message["data"])
                except ValueError:
                    logger.warning("dropped a malformed message on %r", channel)
                    return
                try:
                    self._on_message(channel, seq, data)
                except Exception:
                    logger.exception("on_message failed for channel %r", channel)

    async def _probe(self) -> None:
        assert self._publisher is not None
        while True:
            await asyncio.sleep(self._probe_interval)
            if time.monotonic() - self._probe_seen > self._probe_limit:
                raise TimeoutError(f"probe not echoed within {self._probe_limit:g}s")
            try:
                await self._publisher.publish(self._probe_wire, b"probe")
            except _FAILURES as exc:
                self._probe_failed = True
                logger.warning("redis broker probe publish failed: %s", exc)

    async def _supervise(self) -> None:
        assert self._on_reconnect is not None
        failures = 0
        while True:
            if (session := self._session) is not None:
                done, _ = await asyncio.wait(session.tasks, return_when=asyncio.FIRST_COMPLETED)
                errors = (repr(task.exception()) for task in done if not task.cancelled())
                reason = session.reason or "; ".join(errors)
                logger.warning("redis broker lost its subscription (%s); reconnecting", reason)
                await self._close_session(session)
            # Jitter keeps instances that lost Redis together from returning in lockstep;
            # the cap keeps recovery after a restart within ~2 s.
            failures += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)) * random.uniform(0.5, 1))
            try:
                await self._open_session()
            except _FAILURES as exc:
                logger.debug("redis broker reconnect attempt %d failed: %s", failures, exc)
                continue
            except Exception:
                # A bug must not end reconnecting for good: keep trying, but loudly.
                logger.exception("redis broker reconnect attempt %d failed", failures)
                continue
            failures = 0
            logger.info("redis broker re-subscribed %d channels", len(self._wanted))
            try:
                await self._on_reconnect()
            except Exception:
                logger.exception("on_reconnect failed")
