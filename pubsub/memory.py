"""The in-process broker: one process, no cross-instance fan-out."""

from __future__ import annotations

from pubsub.broker import MessageHandler, ReconnectHandler


class MemoryBroker:
    """Delivers published messages to this process's subscribers, synchronously."""

    def __init__(self) -> None:
        self._channels: set[str] = set()
        self._on_message: MessageHandler | None = None

    async def start(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        self._on_message = on_message

    async def stop(self) -> None:
        self._on_message = None
        self._channels.clear()

    async def publish(self, channel: str, message: bytes, seq: int | None = None) -> None:
        if self._on_message is not None and channel in self._channels:
            self._on_message(channel, seq, message)

    async def publish_many(self, messages: list[tuple[str, int | None, bytes]]) -> None:
        for channel, seq, message in messages:
            await self.publish(channel, message, seq)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    @property
    def healthy(self) -> bool:
        return self._on_message is not None
