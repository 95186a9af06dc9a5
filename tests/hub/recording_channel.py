"""A delivery channel for the core's own tests: a real implementation of the protocol
(``hub.channels``) that records what it is asked to send, and can be told to fail."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hub.channels import Channel, Delivery, Permanent, Temporary
from hub.services import Services
from hub.settings import Settings


@dataclass
class Recorder:
    """Registered as a ``hub.delivery.REGISTRY`` value; every channel it makes records
    into ``sent`` (deliveries whose send returned) and ``attempts`` (every call)."""

    name: str = "email"
    #: The first ``fail_times`` calls of each delivery raise ``Temporary``.
    fail_times: int = 0
    #: What the ``Temporary`` failures say (``{n}``: the attempt).
    failure: str = "try {n} refused"
    #: Every call raises ``Permanent(permanent)`` when set.
    permanent: str | None = None
    #: Seconds each send takes.
    delay: float = 0.0
    sent: list[Delivery] = field(default_factory=list)
    attempts: list[Delivery] = field(default_factory=list)
    closed: int = 0

    def configured(self, settings: Settings) -> bool:
        return True

    def make(self, svc: Services) -> Channel:
        return _Recording(self)


class _Recording:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.name = recorder.name

    async def send(self, delivery: Delivery) -> None:
        r = self.recorder
        r.attempts.append(delivery)
        if r.delay:
            await asyncio.sleep(r.delay)
        if r.permanent is not None:
            raise Permanent(r.permanent)
        if delivery.attempt <= r.fail_times:
            raise Temporary(r.failure.format(n=delivery.attempt))
        r.sent.append(delivery)

    async def close(self) -> None:
        self.recorder.closed += 1
