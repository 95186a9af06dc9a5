"""What domain operations need: settings, the database pool and the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db import events as event_log
from db.pool import Connection, Pool
from hub.events import BROADCAST, UserEvent, encode, user_channel
from hub.metrics import Metrics
from hub.settings import Settings
from hub.writer import GroupCommit
from pubsub.broker import Broker
from pubsub.presence import MemoryPresence, PresenceStore

if TYPE_CHECKING:
    from hub.presence import Presence

log = logging.getLogger("notifyhub")

#: The longest a write waits for the broker after its commit, for all its events.
PUBLISH_DEADLINE = 2.0


#: A committed change of one user's state: ``(user_id, seq, type, data)``.
Event = tuple[str, int, str, Any]
#: A change to log, before it has its ``seq``: ``(user_id, type, data)``.
Change = tuple[str, str, Any]


class UnitOfWork:
    """One transaction's connection and the events appended in it (``Services.write``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[Event] = []

    async def append(self, changes: list[Change]) -> list[Event]:
        """Log ``(user_id, type, data)`` changes; they are published after the commit."""
        events = await event_log.append(self.conn, changes)
        self.events.extend(events)
        return events


@dataclass
class Services:
    """The resources of one hub instance, built once by the app factory or the CLI."""

    settings: Settings
    pool: Pool
    broker: Broker
    metrics: Metrics = field(default_factory=Metrics)
    #: Group-commit writers by what they write (``hub.notifications.writer``,
    #: ``hub.messages.writer``), each made on first use by the module that owns it.
    writers: dict[str, GroupCommit[Any, Any]] = field(default_factory=dict, repr=False)
    #: The delivery channels configured on this hub (``hub.delivery.configured``, set by
    #: the runtime): creates schedule deliveries on these only.
    delivery_channels: tuple[str, ...] = ()
    #: Set after a commit that may have scheduled deliveries: wakes the workers here.
    deliveries_due: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Set after a commit that scheduled notifications: wakes the scheduler here, which
    #: may be sleeping past their ``send_at`` (``hub.scheduled``).
    schedule_changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Who is online on any instance (``hub.runtime.make_presence``).
    presence_store: PresenceStore = field(default_factory=MemoryPresence, repr=False)
    #: This instance's presence tracker, set by the live node (None without one).
    presence: Presence | None = field(default=None, repr=False)
    #: Set after a commit that recorded an action choice: wakes the relay of the
    #: ``{prefix}actions`` stream here (``hub.actions``).
    actions_pending: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: The time zone names PostgreSQL knows, read on first use (``hub.contacts.zones``).
    time_zones: frozenset[str] | None = field(default=None, repr=False)

    def writer(
        self, name: str, make: Callable[[], GroupCommit[Any, Any]]
    ) -> GroupCommit[Any, Any]:
        """This instance's group-commit writer ``name``, made by ``make`` on first use."""
        writer = self.writers.get(name)
        if writer is None:
            writer = self.writers[name] = make()
        return writer

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work: one transaction whose appended events are published once it
        has committed (and never when it rolls back)."""
        async with self.pool.acquire() as conn, conn.transaction():
            work = UnitOfWork(conn)
            yield work
        await self.publish(work.events)

    async def publish(self, events: Iterable[tuple[str, int, str, Any]]) -> list[UserEvent]:
        """Hand committed ``(user_id, seq, type, data)`` events to the broker.

        The events are already durable in the event log, so a broker failure is logged
        and swallowed: connected clients find the gap and fetch it from the database.
        """
        published = [UserEvent(*event) for event in events]
        if not published:
            return published
        if not self.broker.healthy:
            # Waiting on a broker that is down or hung would hold the caller's request
            # after its commit; the head check and the reconnect catch-up deliver these.
            self._lost(len(published), "the broker is down")
            return published
        try:
            # One deadline and one round trip for the whole batch: a hung broker costs a
            # write at most PUBLISH_DEADLINE seconds, however many users it touched.
            async with asyncio.timeout(PUBLISH_DEADLINE):
                # Each event is encoded once here; its seq travels beside the bytes, so
                # no instance decodes them again to fan them out.
                await self.broker.publish_many(
                    [(user_channel(e.user_id), e.seq, e.encode()) for e in published]
                )
        except Exception as exc:
            self._lost(len(published), str(exc) or type(exc).__name__)
        return published

    def _lost(self, count: int, reason: str) -> None:
        # Expected while the broker is down: one line per batch, no traceback.
        self.metrics.broker_publish_errors.inc(count)
        log.warning("%d event(s) not published (%s); clients will catch up from the log",
                    count, reason)

    async def broadcast(self, type_: str, data: Any) -> None:
        """Send an ephemeral (``seq: null``) event to everyone connected, best effort."""
        await self.relay([(BROADCAST, encode(type_, None, data))], type_)

    async def relay(self, frames: list[tuple[str, bytes]], what: str) -> None:
        """Publish ephemeral (``seq: null``) ``(channel, frame)`` pairs in one round trip,
        best effort: a broker that is down or slow loses them (logged as ``what``)."""
        if not frames:
            return
        if not self.broker.healthy:
            self._lost(len(frames), f"the broker is down; {what} not sent")
            return
        try:
            async with asyncio.timeout(PUBLISH_DEADLINE):
                await self.broker.publish_many([(ch, None, frame) for ch, frame in frames])
        except Exception as exc:
            self._lost(len(frames), f"{what} not sent: {exc or type(exc).__name__}")
