"""The Broker protocol: how hub instances exchange user events.

Channels are logical names (``user:<id>``, ``broadcast``); a broker adds its own
prefix. Messages are opaque bytes, encoded once by the publisher, and travel with
their position ``seq`` (None for ephemeral ones) beside them, so a subscriber learns
where an event belongs without decoding it (centrifuge's ``HandlePublication(ch, pub,
sp)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

#: Called with ``(channel, seq, message)`` for every message on a subscribed channel;
#: must not block.
MessageHandler = Callable[[str, int | None, bytes], None]
#: Called after the broker reconnected and restored its subscriptions, so the hub can
#: look for events that were published while it was cut off.
ReconnectHandler = Callable[[], Awaitable[None]]


class Broker(Protocol):
    """Publish/subscribe between hub instances."""

    async def start(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        """Connect and begin delivering messages of subscribed channels to ``on_message``."""

    async def stop(self) -> None:
        """Disconnect; no handler is called afterwards."""

    async def publish(self, channel: str, message: bytes, seq: int | None = None) -> None:
        """Send ``message`` and its ``seq`` to every instance subscribed to ``channel``
        (this one included)."""

    async def publish_many(self, messages: list[tuple[str, int | None, bytes]]) -> None:
        """``publish`` each ``(channel, seq, message)`` in order, in one round trip where
        possible."""

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns once the subscription is active."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @property
    def healthy(self) -> bool:
        """Whether the broker is connected and its subscriptions are live."""
        ...
