"""The Broker protocol: how hub instances exchange user events.

Channels are logical names (``user:<id>``, ``broadcast``); a broker adds its own
prefix. Messages are opaque bytes, encoded once by the publisher.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

#: Called for every message on a subscribed channel; must not block.
MessageHandler = Callable[[str, bytes], None]
#: Called after the broker reconnected and restored its subscriptions, so the hub can
#: look for events that were published while it was cut off.
ReconnectHandler = Callable[[], Awaitable[None]]


class Broker(Protocol):
    """Publish/subscribe between hub instances."""

    async def start(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        """Connect and begin delivering messages of subscribed channels to ``on_message``."""

    async def stop(self) -> None:
        """Disconnect; no handler is called afterwards."""

    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to every instance subscribed to ``channel`` (this one included)."""

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """``publish`` each ``(channel, message)`` in order, in one round trip where possible."""

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns once the subscription is active."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @property
    def healthy(self) -> bool:
        """Whether the broker is connected and its subscriptions are live."""
        ...
