"""The live node: fans broker messages out to local connections, resumes and fills gaps.

Ordering rests on one property of the event log: a user's seq is allocated under that
user's counter row lock, so when event N+1 is visible (or published), event N is
committed. A connection that sees seq jump therefore reads the missing range from the
log; one that connects with ``since`` subscribes first and reads the log second, so
every event lands in the log read, in the live stream, or both (duplicates are dropped
by seq). Fan-out (``on_message``) is synchronous: it never awaits a client and never
starts a task per message; at most one catch-up task runs per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from db import events as event_log
from db import notifications as inbox
from db.errors import DatabaseUnavailable
from hub.connection import Close, Connection, Verdict, start_point
from hub.errors import Unavailable
from hub.events import BROADCAST, PROTOCOL_VERSION, encode, sse_block, user_channel
from hub.presence import Presence
from hub.registry import Registry
from hub.services import Services
from hub.tokens import LEEWAY_SECONDS

log = logging.getLogger("notifyhub")

USER_PREFIX = user_channel("")
#: The transport whose outbox holds SSE blocks rather than JSON frames.
SSE = "sse"
#: Events read from the log per query during replay and gap fill.
PAGE = 500
#: Connections closed per second while draining, so clients do not return all at once.
DRAIN_RATE = 500.0
#: Users per query of the periodic head check.
HEAD_CHECK_BATCH = 1000
#: A log read that finds nothing newer than a held frame retries this fast, at most.
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)


class Node:
    """Owns this instance's connections (``registry``) and their delivery guarantees."""

    def __init__(self, svc: Services, *, expiry_leeway: float = LEEWAY_SECONDS) -> None:
        self.svc = svc
        self.registry = Registry(svc.settings.max_connections_per_user)
        #: Seconds after a token's ``exp`` that its connection is closed (4401); the
        #: same leeway the token was verified with, so a connection lives exactly as
        #: long as its token would still be accepted.
        self.expiry_leeway = expiry_leeway
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._watcher: asyncio.Task[None] | None = None
        #: Per connection, the log head seen by the previous head check while it lagged.
        self._lagging: dict[Connection, int] = {}
        #: Told when a user's first connection here opens and their last one closes.
        self.presence = svc.presence = Presence(svc, lambda user: self.registry.count(user) > 0)

    def connection(self, user_id: str, transport: str, expires_at: float | None) -> Connection:
        """A new connection with this instance's outbox limits (not attached yet)."""
        s = self.svc.settings
        return Connection(
            user_id, transport, max_events=s.outbox_max_events, max_bytes=s.outbox_max_bytes,
            expires_at=expires_at,
        )

    async def start(self) -> None:
        """Receive broadcasts (announcements), watch the log heads and track presence;
        after broker start."""
        await self.svc.broker.subscribe(BROADCAST)
        await self.presence.start()
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch_heads(self.svc.settings.head_check_seconds), name="head check"
        )

    async def stop(self) -> None:
        """Close every connection (1001) and stop their catch-ups; for the app's shutdown."""
        self.draining = True
        tasks = []
        if self._watcher is not None:
            self._watcher.cancel()
            tasks.append(self._watcher)
        for conn in list(self.registry):
            conn.close(Close.GOING_AWAY, "server shutting down")
            if conn.task is not None and not conn.task.done():
                conn.task.cancel()
                tasks.append(conn.task)
        if tasks:
            await asyncio.wait(tasks)
        await self.presence.stop()

    # ---- connect and disconnect ------------------------------------------------------

    async def attach(self, conn: Connection, since: int | None) -> None:
        """Register ``conn``, queue ``hello``, then replay from ``since`` and go live.

        ``since`` None means only events newer than now. A ``since`` the log cannot
        serve (pruned, or ahead of it) gets a ``resync`` frame and continues from now.
        The replay runs in the connection's catch-up task, beside the writer.
        Raises Unavailable while draining, and RateLimited when the user already has
        ``max_connections_per_user`` connections here: both before any database work.
        On any failure the connection is detached.
        """
        if self.draining:
            raise Unavailable("this instance is shutting down; reconnect")
        user = conn.user_id
        try:
            async with self.registry.guard(user):
                first = self.registry.add(conn)
                self._idle.clear()
                self.svc.metrics.connections.labels(conn.transport).inc()
                if self.draining:
                    # drain() sets the flag and lists connections in one step: one added
                    # after that list would never be closed.
                    self._forget(conn)
                    raise Unavailable("this instance is shutting down; reconnect")
                if first:
                    try:
                        # Subscribed before the log is read: nothing falls between the two.
                        await self.svc.broker.subscribe(user_channel(user))
                    except BaseException:
                        # Unregistered before the guard is released, so the user's next
                        # connection sees itself as first and subscribes again; a
                        # cancelled subscribe may still have gone through: undo it.
                        if self._forget(conn):
                            with contextlib.suppress(Exception):
                                await asyncio.shield(
                                    self.svc.broker.unsubscribe(user_channel(user))
                                )
                        raise
                    self.presence.changed(user)
            async with (
                self.svc.pool.acquire() as db,
                # One snapshot: the counts count exactly the events up to last_seq.
                db.transaction(isolation="repeatable_read", readonly=True),
            ):
                head, first_kept = await event_log.bounds(db, user)
                unread, unseen = await inbox.counts(db, user)
            hello = {"user_id": user, "last_seq": head, "unread_count": unread,
                     "unseen_count": unseen, "protocol": PROTOCOL_VERSION}
            conn.send(framed(conn, encode("hello", None, hello)))
            start, reason = start_point(since, head, first_kept)
            if reason is not None:
                conn.send(framed(conn, encode("resync", None, {"reason": reason})))
            conn.last_seq = conn.start_seq = start
            conn.greeted = True
            if start == head and not conn.recheck:
                # Nothing to replay: held live frames (if any) merge now, without a query.
                self._after_merge(conn, conn.go_live())
            else:
                self._catch_up(conn)
            self._schedule_expiry(conn)
        except BaseException:
            await self.detach(conn)
            raise

    async def detach(self, conn: Connection) -> None:
        """Forget ``conn`` (idempotent); unsubscribes its user's channel with the last one."""
        conn.close(Close.NORMAL)
        task = conn.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})
        user = conn.user_id
        async with self.registry.guard(user):
            if conn in self.registry and self._forget(conn):
                try:
                    await self.svc.broker.unsubscribe(user_channel(user))
                except Exception:
                    log.warning("unsubscribing %s failed", user, exc_info=True)

    def _forget(self, conn: Connection) -> bool:
        last = self.registry.remove(conn)
        self.svc.metrics.connections.labels(conn.transport).dec()
        if last:
            self.presence.changed(conn.user_id)
        if not self.registry:
            self._idle.set()
        return last

    async def drain(self, seconds: float) -> None:
        """Close every connection with 1001, spread over up to ``seconds``, and wait.

        Spreading (``DRAIN_RATE`` per second, at most ``seconds``) keeps thousands of
        clients from reconnecting to the other instances in the same instant. Returns
        once every connection is detached, or ``seconds`` + 1 s after starting.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        conns = [conn for conn in self.registry if not conn.closed]
        if conns:
            step = min(seconds, len(conns) / DRAIN_RATE) / len(conns)
            for i, conn in enumerate(conns):
                delay = started + i * step - loop.time()
                if delay > 0.01:
                    await asyncio.sleep(delay)
                conn.close(Close.GOING_AWAY, "server shutting down")
        remaining = started + seconds + 1.0 - loop.time()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.1, remaining))
        except TimeoutError:
            log.warning("%d live connections did not finish draining", len(self.registry))

    # ---- fan-out ---------------------------------------------------------------------

    def on_message(self, channel: str, seq: int | None, payload: bytes) -> None:
        """Broker handler: offer ``payload`` (the same bytes) to each local recipient.

        ``seq`` comes beside the bytes, so fan-out never decodes what it forwards. SSE
        connections get the event's SSE block instead, cut once, when the first of them
        needs it, and shared by all.
        """
        if channel == BROADCAST:
            targets: tuple[Connection, ...] = tuple(self.registry)
            seq = None
        elif channel.startswith(USER_PREFIX):
            targets = self.registry.of(channel[len(USER_PREFIX):])
            if not targets:
                return
        else:
            return
        block = None
        delivered = 0  # counted once per message: a broadcast reaches every connection
        for conn in targets:
            if conn.transport == SSE:
                if block is None:
                    block = sse_block(payload)
                verdict = conn.offer(seq, block)
            else:
                verdict = conn.offer(seq, payload)
            if verdict is Verdict.DELIVERED:
                delivered += 1
            elif verdict is Verdict.GAP:
                self.svc.metrics.gap_fills.inc()
                self._catch_up(conn)
            elif verdict is Verdict.SLOW:
                self.slow(conn)
        if delivered:
            self.svc.metrics.events_delivered.inc(delivered)

    async def on_reconnect(self) -> None:
        """Broker handler after a reconnect: every connection re-reads the log."""
        for conn in list(self.registry):
            if conn.closed:
                continue
            if conn.greeted:
                self._catch_up(conn)
            else:
                conn.recheck = True  # attach reads the log instead of going live directly

    async def _watch_heads(self, interval: float) -> None:
        """Every ``interval``, compare each local user's log head with their connections.

        The broker is fire-and-forget: a publish that failed after commit, or an event
        committed by a process this broker cannot reach (``notifyhub publish`` beside a
        hub on the in-process broker), would otherwise wait for that user's next event.
        A connection still behind a head seen one check earlier catches up from the log;
        waiting one check leaves in-flight publishes time to arrive on their own.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_heads()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("head check failed: %s", exc)

    async def check_heads(self) -> int:
        """One head check (see ``_watch_heads``); returns how many connections caught up."""
        users = self.registry.user_ids()
        lagging: dict[Connection, int] = {}
        started = 0
        for i in range(0, len(users), HEAD_CHECK_BATCH):
            heads = await event_log.heads(self.svc.pool, users[i:i + HEAD_CHECK_BATCH])
            for user, head in heads.items():
                for conn in self.registry.of(user):
                    if conn.closed or not conn.greeted or head <= conn.last_seq:
                        continue
                    seen = self._lagging.get(conn)
                    if seen is not None and conn.last_seq < seen and not conn.catching_up:
                        self.svc.metrics.gap_fills.inc()
                        self._catch_up(conn)
                        started += 1
                    else:
                        lagging[conn] = head
        self._lagging = lagging
        return started

    def slow(self, conn: Connection) -> None:
        """Close ``conn`` as too slow (4008); its queued frames are freed at once."""
        if conn.close(Close.TOO_SLOW, "too slow"):
            self.svc.metrics.slow_disconnects.inc()

    # ---- catch-up --------------------------------------------------------------------

    def _catch_up(self, conn: Connection) -> None:
        conn.catching_up = True
        if conn.task is not None and not conn.task.done():
            conn.recheck = True  # the running catch-up reads the log once more
            return
        conn.task = asyncio.get_running_loop().create_task(
            self._run_catch_up(conn), name=f"catch-up {conn.user_id}"
        )

    async def _run_catch_up(self, conn: Connection) -> None:
        attempt = 0
        try:
            while not conn.closed:
                conn.recheck = False
                before = conn.last_seq
                if not await self._read_log(conn):
                    return
                if conn.recheck:
                    continue
                verdict = conn.go_live()
                if verdict is not Verdict.GAP:
                    self._after_merge(conn, verdict)
                    return
                # A held frame is ahead of everything the log returned: it was published
                # before our read saw its predecessor's commit. Read again, gently.
                attempt = 0 if conn.last_seq > before else attempt + 1
                if attempt:
                    await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1])
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable as exc:
            log.warning("catch-up for %s failed: %s", conn.user_id, exc)
            conn.close(Close.TRY_AGAIN, "database unavailable")
        except Exception:
            log.exception("catch-up for %s failed", conn.user_id)
            conn.close(Close.INTERNAL, "internal error")

    async def _read_log(self, conn: Connection) -> bool:
        """Queue logged events after ``conn.last_seq``; False if the connection ended."""
        metrics = self.svc.metrics
        while True:
            rows = await event_log.since(self.svc.pool, conn.user_id, conn.last_seq, PAGE)
            for row in rows:
                if conn.closed:
                    return False
                seq = row["seq"]
                if seq > conn.last_seq + 1:
                    # Pruned under us (far beyond the kept history): refetch over REST.
                    conn.send(framed(conn, encode("resync", None, {"reason": "history_pruned"})))
                if not conn.outbox.has_room:
                    await conn.outbox.wait_room()
                    if conn.closed:
                        return False
                frame = framed(conn, encode(row["type"], seq, row["data"]))
                if conn.deliver(seq, frame) is Verdict.SLOW:
                    self.slow(conn)
                    return False
                metrics.events_delivered.inc()
            if len(rows) < PAGE:
                return not conn.closed

    def _after_merge(self, conn: Connection, verdict: Verdict) -> None:
        if verdict is Verdict.GAP:
            self._catch_up(conn)
        elif verdict is Verdict.SLOW:
            self.slow(conn)

    def _schedule_expiry(self, conn: Connection) -> None:
        if conn.expires_at is None or conn.closed:
            return
        delay = conn.expires_at + self.expiry_leeway - time.time()
        conn.expiry = asyncio.get_running_loop().call_later(
            max(0.0, delay), conn.close, Close.UNAUTHORIZED, "token expired"
        )


def framed(conn: Connection, frame: bytes) -> bytes:
    """``frame`` as ``conn``'s transport queues it: the JSON frame, or its SSE block."""
    return sse_block(frame) if conn.transport == SSE else frame
