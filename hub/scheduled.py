"""The notification scheduler: sends each scheduled notification at its ``send_at``,
and returns each snoozed one to the inbox at its ``snoozed_until`` (``hub.inbox``), once
across instances (docs/delivery.md, "Scheduled notifications"; docs/api.md, "The inbox").

A create with a later ``send_at`` is stored by ``hub.notifications`` (in the group
commit, with its idempotency key and contact, rendered). Every ``serve`` instance runs
``run_scheduler``: it sleeps until the next ``send_at`` (at most ``RECHECK_SECONDS``;
a schedule made by this instance wakes it at once), leases the due rows
(``db.scheduled.claim_due``: ``SKIP LOCKED`` and a lease, so instances take different
rows) and hands each to this instance's notification writer as a ``Due`` job. The
writer creates it like a fresh create (preferences, deliveries, the user's next
``seq``, the live push) in the transaction that deletes its row, so a crash before the
commit leaves the row to be sent after the lease, and a row already taken creates
nothing: sent once, never lost.

Returning a snoozed notification needs no writer and no lease: the one transaction of
``hub.inbox.return_due`` takes the due rows (``SKIP LOCKED``) and moves them back with
their events, so a crash before its commit leaves them snoozed and due, and a row
returned is no longer snoozed for anyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from db import scheduled as store
from db.errors import DatabaseRejected, DatabaseUnavailable
from hub import inbox, notifications
from hub.errors import HubError
from hub.models import Action, NotificationCreate
from hub.periodic import run_when_due
from hub.services import Services

log = logging.getLogger("notifyhub")

#: The scheduler re-checks at least this often, so a notification scheduled (or snoozed)
#: through another instance (or by ``notifyhub publish``) is sent (or returned) at most
#: this late.
RECHECK_SECONDS = 5.0
#: How long a leased row is left to the instance that leased it: an instance that dies
#: after leasing delays those notifications by at most this.
LEASE_SECONDS = 30.0
#: The most rows one lease takes, and the most leases one step makes.
BATCH = 500
MAX_BATCHES = 20


def due_job(row: dict[str, Any]) -> notifications.Due:
    """The writer's job for leased ``row`` (validated when it was scheduled)."""
    request = NotificationCreate.model_construct(
        user_ids=row["user_ids"], type=row["type"], title=row["title"], body=row["body"],
        link=row["link"], data=row["data"], priority=row["priority"],
        expires_at=row["expires_at"],
        actions=[Action.model_construct(**a) for a in row["actions"] or []] or None,
        collapse_key=row.get("collapse_key"), actor=row.get("actor"),
    )
    # Each localized recipient's (title, body, link), then their grouped patterns if any.
    localized = {user: (c[0], c[1], c[2]) for user, c in row["localized"].items()}
    localized_grouped = {user: (c[3], c[4]) for user, c in row["localized"].items()
                         if len(c) == 5}
    grouped = (row["grouped_title"], row["grouped_body"]) if row.get("collapse_key") else None
    return notifications.Due(row["id"], request, row["idempotency_key"], localized, grouped,
                             localized_grouped)


async def send_batch(svc: Services, limit: int = BATCH) -> int:
    """Lease up to ``limit`` due notifications and create them; return how many leased.

    One that the database refuses for good (or, impossible once validated, whose content
    fails) is dropped with an error in the log. Raises ``DatabaseUnavailable`` when the
    database failed: the rows stay leased and are sent once the lease ends.
    """
    rows = await store.claim_due(svc.pool, limit, LEASE_SECONDS)
    if not rows:
        return 0
    writer = notifications.writer(svc)
    futures = [await writer.enqueue(due_job(row)) for row in rows]
    await asyncio.wait(futures)
    outage: BaseException | None = None
    dead: list[int] = []
    for row, future in zip(rows, futures, strict=True):
        failure = future.exception()
        if failure is None:
            continue
        if isinstance(failure, DatabaseUnavailable):
            outage = failure
        elif isinstance(failure, HubError | DatabaseRejected):
            log.error("scheduled notification %d cannot be sent and is dropped: %s",
                      row["id"], failure)
            dead.append(row["id"])
        else:  # a bug: loud, and tried again when the lease ends
            log.error("scheduled notification %d failed; retried in %.0f s",
                      row["id"], LEASE_SECONDS, exc_info=failure)
    if dead:
        await store.drop(svc.pool, dead)
    if outage is not None:
        raise outage
    return len(rows)


async def send_due(svc: Services) -> float | None:
    """Send the scheduled notifications that are due and return the snoozed ones whose
    time has come (``hub.inbox.return_due``), at most ``MAX_BATCHES`` batches of each;
    the seconds until the next of either (None: nothing waits)."""
    if not await _drain(lambda: send_batch(svc), BATCH):
        return 0.0  # more is due: go on after the shortest sleep
    if not await _drain(lambda: inbox.return_due(svc), inbox.BATCH):
        return 0.0
    waits = [await store.seconds_to_next(svc.pool), await inbox.seconds_to_return(svc)]
    return min((w for w in waits if w is not None), default=None)


async def _drain(batch: Callable[[], Awaitable[int]], size: int) -> bool:
    """Run ``batch`` until one comes back short (True), or ``MAX_BATCHES`` times (False:
    more is due)."""
    for _ in range(MAX_BATCHES):
        if await batch() < size:
            return True
    return False


async def run_scheduler(svc: Services, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
    """Send each scheduled notification at its ``send_at``; runs until cancelled."""
    await run_when_due(
        "notification scheduler", lambda: send_due(svc),
        recheck_seconds=recheck_seconds, wake=svc.schedule_changed,
    )


async def page(
    svc: Services, user_id: str | None, *, before: int | None, limit: int
) -> dict[str, Any]:
    """Notifications waiting for their ``send_at`` (of ``user_id`` if given), newest first."""
    items, next_before = await store.page(svc.pool, user_id, before, limit)
    return {"items": items, "next_before": next_before}
