"""The Redis broker: fan-out between hub instances over Redis pub/sub.

Wire layout: logical channel ``c`` is the Redis channel ``{prefix}c``; each instance also
subscribes ``{prefix}probe:<instance id>`` and publishes to it every ``probe_interval``
to prove, end to end, that its subscriber connection still receives. Nothing here
queues: Redis drops a subscriber that falls too far behind, which is one more reconnect.
Messages are in the wire format of ``pubsub.session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from pubsub.broker import MessageHandler, ReconnectHandler
from pubsub.errors import BrokerUnavailable
from pubsub.session import REDIS_FAILURES, Sent, Session, SessionBroker, wire

logger = logging.getLogger(__name__)

#: Publishes a batch in one command: ARGV is channel, message, channel, message, ...
#: One EVALSHA costs the client a fraction of N pipelined PUBLISHes (no per-command
#: packing and reply parsing in redis-py); subscribers see the same N messages.
_PUBLISH_ALL = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""
#: Messages per script call, so one call never holds Redis for long.
SCRIPT_CHUNK = 1000


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


class RedisBroker(SessionBroker):
    """Broker over Redis pub/sub that survives Redis restarts and reports its health.

    A session (one subscriber connection, one reader task) ends on a connection error, a
    missing probe echo or an unconfirmed (un)subscribe; the broker then reconnects with
    jittered exponential backoff, re-subscribes every wanted channel, awaits on_reconnect.
    Publishes use a separate bounded pool. ``timeout`` bounds connecting, each command and
    each confirmation; ``probe_interval * probe_misses`` bounds trust in a silent connection.
    """

    _log, _name = logger, "redis broker"

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
        super().__init__(
            prefix, probe_interval=probe_interval, probe_misses=probe_misses, timeout=timeout
        )
        self._url, self._max_connections = url, max_connections
        self._probe_wire = f"{prefix}probe:{uuid.uuid4().hex}".encode()
        self._session: Session | None = None
        self._subscriber: Redis | None = None
        self._publisher: Redis | None = None
        self._script: AsyncScript | None = None

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
            if isinstance(exc, REDIS_FAILURES):
                raise BrokerUnavailable(f"cannot subscribe on Redis: {exc}") from exc
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-broker")

    async def stop(self) -> None:
        """Stop reconnecting and close every connection; prompt even when Redis is down."""
        await self._halt()
        if self._session is not None:
            await self._close_session(self._session)
        self._wanted.clear()
        for client in (self._subscriber, self._publisher):
            if client is not None:
                with contextlib.suppress(*REDIS_FAILURES):
                    await client.aclose()
        self._subscriber = self._publisher = None

    async def publish(self, channel: str, message: bytes, seq: int | None = None) -> None:
        """Publish to every subscribed instance; raises ``BrokerUnavailable`` on failure."""
        if self._publisher is None:
            raise BrokerUnavailable("RedisBroker is not started")
        try:
            await self._publisher.publish(self._prefix + channel, wire(seq, message))
        except REDIS_FAILURES as exc:
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
            for i in range(0, len(args), 2 * SCRIPT_CHUNK):
                await self._script(args=args[i:i + 2 * SCRIPT_CHUNK])
        except ResponseError as exc:
            if self._script is None or "NOSCRIPT" in str(exc):
                raise BrokerUnavailable(f"publishing failed: {exc}") from exc
            # An ACL without EVAL/EVALSHA, or scripting switched off: pipeline instead.
            logger.warning("publishing with a Lua script failed (%s); using pipelined "
                           "PUBLISH from now on", exc)
            self._script = None
            await self.publish_many(messages)
        except REDIS_FAILURES as exc:
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
        session = self._session
        return session is not None and session.healthy(self._probe_limit)

    async def _send(self, command: str, channel: str) -> Sent | None:
        async with self._send_lock:
            session = self._session
            if session is None or session.closing:
                return None  # the next session subscribes from self._wanted
            waiter, wire = session.expect(), (self._prefix + channel).encode()
            pubsub = session.pubsub
            send = pubsub.subscribe(wire) if command == "SUBSCRIBE" else pubsub.unsubscribe(wire)
            try:
                await asyncio.wait_for(send, self._timeout)
            except REDIS_FAILURES as exc:
                session.kill(f"{command} failed: {exc}")
            return session, waiter

    async def _open_session(self) -> None:
        assert self._subscriber is not None and self._publisher is not None
        session = Session(self._subscriber.pubsub())
        try:
            async with self._send_lock:
                wires = [self._probe_wire, *((self._prefix + c).encode() for c in self._wanted)]
                waiters = [session.expect() for _ in wires]
                await asyncio.wait_for(session.pubsub.subscribe(*wires), self._timeout)
                dispatch = functools.partial(self._dispatch, session)
                session.tasks.add(asyncio.create_task(session.read(dispatch), name="redis-reader"))
                self._session = session
            if not all(await asyncio.wait_for(asyncio.gather(*waiters), self._timeout)):
                raise RedisConnectionError(session.reason or "connection lost while subscribing")
        except BaseException:
            await self._close_session(session)
            raise
        session.echoed()
        session.live = True
        probe = functools.partial(self._publisher.publish, self._probe_wire, b"probe")
        session.tasks.add(asyncio.create_task(self._probe(session, probe), name="redis-probe"))

    async def _close_session(self, session: Session) -> None:
        session.closing, session.live = True, False
        if self._session is session:
            self._session = None
        for task in session.tasks:
            task.cancel()
        # return_exceptions retrieves them: the supervisor has already logged the reason.
        await asyncio.gather(*session.tasks, return_exceptions=True)
        session.settle(confirmed=False)
        with contextlib.suppress(*REDIS_FAILURES):  # the connection is thrown away anyway
            await session.pubsub.aclose()

    def _dispatch(self, session: Session, message: dict[str, Any]) -> None:
        kind, wire = message["type"], message["channel"]
        if kind in ("subscribe", "unsubscribe"):
            session.settle(confirmed=True)
        elif kind == "message" and wire == self._probe_wire:
            session.echoed()
        elif kind == "message":
            self._deliver(wire, message["data"])

    async def _lost(self) -> None:
        if (session := self._session) is not None:
            done, _ = await asyncio.wait(session.tasks, return_when=asyncio.FIRST_COMPLETED)
            errors = (repr(task.exception()) for task in done if not task.cancelled())
            reason = session.reason or "; ".join(errors)
            logger.warning("redis broker lost its subscription (%s); reconnecting", reason)
            await self._close_session(session)

    async def _reopen(self) -> None:
        await self._open_session()
        logger.info("redis broker re-subscribed %d channels", len(self._wanted))
