"""Delivery workers: send the deliveries that notifications schedule (docs/delivery.md).

A notification's deliveries are decided in its own transaction (``hub.notifications``,
one ``deliveries`` row per notification x channel). ``Workers`` claim due rows in
batches (``FOR UPDATE SKIP LOCKED``, a lease in ``next_attempt_at``), call the
channel's ``send`` outside any transaction, at most ``HUB_DELIVERY_WORKERS`` at once,
and record the outcome on the attempt they claimed:

- ``send`` returns: ``sent``;
- ``Permanent(reason)``: ``failed`` at once, ``last_error`` = reason;
- anything else (or no answer within half the lease): due again after an exponential
  backoff with jitter (or the exception's ``retry_after`` seconds, a receiver's
  ``Retry-After``, when longer), ``failed`` once ``HUB_DELIVERY_MAX_ATTEMPTS`` attempts
  failed.

A worker that dies mid-send leaves its claim to expire; the row is then due again and
any worker takes it over (a new attempt). Claims are exclusive, so every attempt is
made by one worker only, however many instances run.

Workers wake when this process commits a notification with deliveries
(``Services.deliveries_due``) and otherwise poll every ``HUB_DELIVERY_POLL_SECONDS``
for what other instances scheduled or what became due. Memory stays bounded: a worker
never claims more rows than it has free send slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from db import deliveries as store
from hub import digest
from hub.channels import Channel, Delivery, Permanent, Skip, push
from hub.channels import email as email_channel
from hub.channels.webhook import SmsChannel, WebhookChannel
from hub.notifications import QUIET_HELD
from hub.services import Services
from hub.settings import Settings

log = logging.getLogger("notifyhub")


class ChannelFactory(Protocol):
    """How a channel module (or class) builds its channel: the registry's values.

    ``configured``: whether the settings turn it on; ``make``: the channel of this
    process (None: off after all).
    """

    def configured(self, settings: Settings) -> bool: ...

    def make(self, svc: Services) -> Channel | None: ...


#: Every delivery channel this hub knows, by the name preferences use.
REGISTRY: dict[str, ChannelFactory] = {
    "email": email_channel,
    "push": push,
    "sms": SmsChannel,
    "webhook": WebhookChannel,
}

#: The most rows one claim takes (never more than the free send slots).
CLAIM_BATCH = 100
#: How long shutdown waits for sends in flight before cancelling them (their claims
#: then expire and another worker retries them).
STOP_GRACE = 10.0
#: The longest wait a receiver's ``Retry-After`` can ask for (seconds).
MAX_RETRY_AFTER = 24 * 3600.0
#: Seconds between two counts of the queue depth (a count reads every due row).
QUEUE_COUNT_SECONDS = 30.0
#: The longest error text recorded in ``last_error``.
MAX_ERROR_CHARS = 500


def configured(settings: Settings) -> tuple[str, ...]:
    """The names of the channels whose settings are present, sorted."""
    return tuple(sorted(name for name, f in REGISTRY.items() if f.configured(settings)))


def log_channels(settings: Settings) -> None:
    """Say once, at start-up, which channels are on and which are off."""
    for name in sorted(REGISTRY):
        if REGISTRY[name].configured(settings):
            log.info("delivery channel %s is on", name)
        else:
            log.info("delivery channel %s is off: its settings are not set "
                     "(docs/delivery.md)", name)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
            ) -> float:
    """Seconds before the attempt after failed attempt ``attempt`` (1, 2, ...):
    ``min(cap, base * 2**(attempt-1))``, times a random factor in [0.5, 1) (jitter)."""
    delay = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return delay * (0.5 + rand() / 2)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    text = str(exc).strip() or type(exc).__name__
    # PostgreSQL text cannot hold NUL: a receiver's binary answer must not make the
    # outcome unrecordable (and the row re-sent at every lease).
    return text[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")


class Workers:
    """The delivery workers of one process: one claim loop and up to ``slots`` sends."""

    def __init__(self, svc: Services, channels: dict[str, Channel]) -> None:
        s = svc.settings
        self.svc = svc
        self.channels = channels
        self.slots = s.delivery_workers
        self.lease = s.delivery_lease_seconds
        #: A send that outlives half its lease is given up (and retried): the other
        #: half is the margin before another worker may take the row over.
        self.send_timeout = s.delivery_lease_seconds / 2
        self._sends: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._counted_at = 0.0
        #: Set while every slot is busy: a send that ends then wakes the claim loop.
        self._full = False
        self.escalate_types = frozenset(s.escalate_types)

    @classmethod
    def build(cls, svc: Services) -> Workers:
        """Workers with every configured channel made (a channel that fails to build is
        logged and left off)."""
        channels: dict[str, Channel] = {}
        for name in svc.delivery_channels:
            try:
                channel = REGISTRY[name].make(svc)
            except Exception:
                log.exception("delivery channel %s could not start; it stays off here", name)
                continue
            if channel is not None:
                channels[name] = channel
        pushes = channels.get(push.NAME)
        if isinstance(pushes, push.PushChannel):
            # Cross-device dismissals go out through the push channel's client.
            channels[push.DISMISS] = push.DismissChannel(pushes)
        mail = channels.get(email_channel.EmailChannel.name)
        if isinstance(mail, email_channel.EmailChannel):
            # Digest jobs are built here and sent through the email channel.
            channels[digest.NAME] = digest.DigestChannel(svc, mail)
        return cls(svc, channels)

    def start(self) -> None:
        if self.slots > 0 and self.channels:
            self._loop = asyncio.create_task(self._run(), name="delivery")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop claiming, let sends in flight finish for ``grace`` seconds, close channels."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for channel in self.channels.values():
            try:
                await channel.close()
            except Exception:
                log.warning("closing delivery channel %s failed", channel.name, exc_info=True)

    async def _run(self) -> None:
        due = self.svc.deliveries_due
        names = sorted(self.channels)
        poll = self.svc.settings.delivery_poll_seconds
        while True:
            free = self.slots - len(self._sends)
            due.clear()  # a commit from here on sets it again: nothing is missed
            claimed: list[dict[str, Any]] = []
            if free > 0:
                try:
                    claimed = await store.claim(
                        self.svc.pool, names, min(free, CLAIM_BATCH), self.lease
                    )
                except Exception as exc:
                    log.warning("claiming deliveries failed (%s); retrying", _reason(exc, 0))
            for item in claimed:
                task = asyncio.create_task(self._send(item))
                self._sends.add(task)
                task.add_done_callback(self._done)
            self._full = len(self._sends) >= self.slots
            await self._count_queue(names, max(poll, QUEUE_COUNT_SECONDS))
            if claimed and len(claimed) == free:
                # Every slot busy: the next claim waits for a slot (``_done`` wakes us).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await due.wait()
                continue
            if claimed:
                continue  # there may be more due than one batch
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await due.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        if self._full:  # the loop waits for a free slot: claim again
            self._full = False
            self.svc.deliveries_due.set()

    async def _count_queue(self, names: list[str], every: float) -> None:
        now = time.monotonic()
        if now - self._counted_at < every:
            return
        self._counted_at = now
        try:
            depth = await store.queue_depth(self.svc.pool)
        except Exception:
            return  # the claim's warning already says the database is unwell
        for name in names:
            self.svc.metrics.delivery_queue.labels(name).set(depth.get(name, 0))

    def _read_meanwhile(self, item: dict[str, Any]) -> bool:
        """Escalate when unseen: a delivery of an ``HUB_ESCALATE_TYPES`` type whose
        notification was read (on any device) before it went out is not sent; nor is a
        push of a read notification (cross-device dismissal: a retry of a push whose
        notification was read while it was being sent)."""
        n = item["notification"]
        if not n["read"]:
            return False
        return item["channel"] == push.NAME or (
            item["channel"] in QUIET_HELD and n["type"] in self.escalate_types)

    async def _send(self, item: dict[str, Any]) -> None:
        s = self.svc.settings
        name, attempt, id_ = item["channel"], item["attempts"], item["delivery_id"]
        delivery = Delivery(
            id=id_, channel=name, attempt=attempt,
            notification=item["notification"], contact=item["contact"],
            user_id=item["recipient"], digest_at=item["digest_at"],
        )
        outcome, error, delay = "sent", "", 0.0
        try:
            if attempt > s.delivery_max_attempts:
                # Claimed again and again without an outcome (a process that died in the
                # send, an outcome that could not be recorded): stop here.
                outcome, error = "failed", f"no outcome after {attempt - 1} attempts"
            elif item["expired"]:
                # Expired between sweeps: never sent (the sweeper deletes the row soon).
                outcome, error = "skipped", "expired"
            elif item["snoozed"]:
                # A retry of one that was being sent when the notification was snoozed:
                # skipped while it is away (its return decides its deliveries again),
                # released at once if it came back since the claim (docs/delivery.md).
                outcome, error = "snoozed", "snoozed"
            elif self._read_meanwhile(item):
                outcome, error = "skipped", "read in-app"
            else:
                async with asyncio.timeout(self.send_timeout):
                    await self.channels[name].send(delivery)
        except Permanent as exc:
            outcome, error = "failed", _reason(exc, self.send_timeout)
        except Skip as exc:
            outcome, error = "skipped", _reason(exc, self.send_timeout)
        except Exception as exc:
            error = _reason(exc, self.send_timeout)
            if attempt >= s.delivery_max_attempts:
                outcome, error = "failed", f"{error} (after {attempt} attempts)"
            else:
                outcome = "retried"
                delay = backoff(attempt, s.delivery_backoff_seconds,
                                s.delivery_backoff_max_seconds)
                asked = getattr(exc, "retry_after", None)
                if isinstance(asked, int | float) and asked > delay:
                    # A receiver's Retry-After, within reason (an endless or absurd one
                    # would park the row for good).
                    delay = min(float(asked), MAX_RETRY_AFTER)
        try:
            if outcome == "sent":
                recorded = await store.sent(self.svc.pool, id_, attempt)
            elif outcome == "failed":
                recorded = await store.failed(self.svc.pool, id_, attempt, error)
            elif outcome == "skipped":
                recorded = await store.skipped(self.svc.pool, id_, attempt, error)
            elif outcome == "snoozed":
                away = await store.skip_snoozed(self.svc.pool, id_, attempt)
                recorded = away is not None
                outcome, error = ("skipped", error) if away is not False else (
                    "retried", "the notification came back from its snooze")
            else:
                recorded = await store.retry(self.svc.pool, id_, attempt, error, delay)
        except Exception as exc:
            # The claim expires and the row is tried again: at most one extra attempt.
            log.warning("recording delivery %d (%s) failed: %s", id_, outcome,
                        _reason(exc, 0))
            return
        if not recorded:
            log.warning("delivery %d: the claim of attempt %d expired before its outcome "
                        "(%s) was recorded", id_, attempt, outcome)
        self.svc.metrics.deliveries.labels(name, outcome).inc()
        if outcome != "sent":
            # Retries are routine (a server down makes one per delivery): debug only.
            log.log(logging.INFO if outcome == "failed" else logging.DEBUG,
                    "delivery %d on %s attempt %d %s: %s", id_, name, attempt, outcome, error)
