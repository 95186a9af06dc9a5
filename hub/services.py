"""What domain operations need: settings, the database pool and the broker."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from hub.events import BROADCAST, UserEvent, encode, user_channel
from hub.metrics import Metrics
from hub.settings import Settings
from pubsub.broker import Broker

log = logging.getLogger("notifyhub")


@dataclass
class Services:
    """The resources of one hub instance, built once by the app factory or the CLI."""

    settings: Settings
    pool: asyncpg.Pool
    broker: Broker
    metrics: Metrics = field(default_factory=Metrics)

    async def publish(self, events: Iterable[tuple[str, int, str, Any]]) -> list[UserEvent]:
        """Hand committed ``(user_id, seq, type, data)`` events to the broker.

        The events are already durable in the event log, so a broker failure is logged
        and swallowed: connected clients find the gap and fetch it from the database.
        """
        published = [UserEvent(*event) for event in events]
        for event in published:
            try:
                await self.broker.publish(user_channel(event.user_id), event.encode())
            except Exception as exc:
                # Expected while the broker is down: one line, no traceback per event.
                self.metrics.broker_publish_errors.inc()
                log.warning("broker publish failed for %s seq %s (%s); clients will gap-fill",
                            event.user_id, event.seq, exc)
        return published

    async def broadcast(self, type_: str, data: Any) -> None:
        """Send an ephemeral (``seq: null``) event to everyone connected, best effort."""
        try:
            await self.broker.publish(BROADCAST, encode(type_, None, data))
        except Exception as exc:
            self.metrics.broker_publish_errors.inc()
            log.warning("broker broadcast of %s failed: %s", type_, exc)
