"""The expiry sweeper: deletes notifications whose ``expires_at`` has passed
(docs/delivery.md, "Expiring notifications").

The inbox hides an expired notification at once (the list and count queries filter
it); the sweeper then deletes it like ``DELETE /api/notifications/{id}`` does, so live
clients get ``notification.deleted`` with the new unread count, and its deliveries go
with the row. Every instance sweeps: rows are claimed with ``SKIP LOCKED``, in batches
of at most ``BATCH``, so instances share the work and never delete a row twice.
"""

from __future__ import annotations

import asyncio
import logging

from db import notifications as store
from hub.periodic import attempt
from hub.services import Services

log = logging.getLogger("notifyhub")

#: The most notifications one sweep transaction deletes.
BATCH = 500


async def sweep_batch(svc: Services, limit: int = BATCH) -> int:
    """Delete up to ``limit`` expired notifications in one transaction, with their
    ``notification.deleted`` events; return how many.

    Rows are locked before counters (``append``), the order every notification write
    takes.
    """
    async with svc.write() as work:
        gone = await store.expire(work.conn, limit)
        if not gone:
            return 0
        counts = await store.counts_locked(work.conn, [u for _, u in gone])
        await work.append([
            (user, "notification.deleted",
             {"id": id_, "unread_count": counts[user][0], "unseen_count": counts[user][1]})
            for id_, user in gone
        ])
    return len(gone)


async def sweep_once(svc: Services) -> int:
    """Sweep until nothing expired is left (batch by batch); return how many."""
    total = 0
    while True:
        count = await sweep_batch(svc)
        total += count
        if count < BATCH:
            return total


async def run_forever(svc: Services) -> None:
    """Sweep every ``expiry_sweep_seconds``; errors are logged and retried next time."""
    while True:
        await asyncio.sleep(svc.settings.expiry_sweep_seconds)
        swept = await attempt("expiry sweeper", lambda: sweep_once(svc))
        if swept:
            log.debug("expiry sweeper deleted %d notifications", swept)
