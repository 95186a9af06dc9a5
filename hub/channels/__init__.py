"""Delivery channels: how a notification reaches a user who is not looking (docs/delivery.md).

A channel sends one *delivery* (one notification on one channel, a row of the
``deliveries`` table that ``hub.delivery`` decides when the notification commits and
that its workers claim, retry and record). ``send`` says how it went:

- it returns: sent;
- it raises ``Permanent(reason)``: it can never succeed (an address refused for good, a
  push subscription gone, nowhere to send it): recorded as ``failed``, never retried;
- it raises ``Skip(reason)``: nothing to send after all (an empty digest): recorded as
  ``skipped``, never retried;
- it raises anything else (``Temporary``, an ``OSError``, a timeout): retried later
  with backoff, until the attempts run out.

A channel is built once per process from the services (``make(svc)``) when its
settings are present (``configured``), and closed at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification to send on one channel, as a worker hands it to the channel."""

    #: The delivery's row id: the same on every attempt (a receiver's idempotency key).
    id: int
    channel: str
    #: 1 on the first attempt.
    attempt: int
    #: The stored notification: id, user_id, type, title, body, link, data, priority,
    #: read, read_at, created_at, expires_at, actions (as the REST API returns it).
    notification: dict[str, Any]
    #: The recipient's contact (``email``, ``phone``, ``locale``, ``time_zone``); keys
    #: that are not set are absent.
    contact: dict[str, Any] = field(default_factory=dict)
    #: The recipient (the notification's user; a digest's user).
    user_id: str = ""
    #: A digest job's period end (docs/delivery.md, "Digests"); None otherwise, and its
    #: ``notification`` is then empty.
    digest_at: datetime | None = None


class Permanent(Exception):
    """The delivery can never succeed; ``str(exc)`` is the reason recorded."""


class Skip(Exception):
    """Nothing to send on purpose; ``str(exc)`` is the reason recorded."""


class Temporary(Exception):
    """The delivery failed this time; it is retried later."""


class Channel(Protocol):
    """Sends deliveries of one channel (``name``: ``email``, ``push``, ``sms``, ``webhook``)."""

    name: str

    async def send(self, delivery: Delivery) -> None: ...

    async def close(self) -> None: ...
