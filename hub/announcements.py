"""Announcements: create, list and delete, and the scheduler that announces them live.

``announcement.created`` and ``announcement.deleted`` are ephemeral broadcasts
(``seq: null``) to everyone connected; they are not part of any user's event log.
An announcement that starts later is broadcast when it starts, by whichever instance
claims it first (see ``db.announcements.claim_due``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from db import announcements as store
from hub.errors import InvalidInput, NotFound
from hub.models import AnnouncementCreate
from hub.periodic import run_when_due
from hub.services import Services

log = logging.getLogger("notifyhub")

#: The most announcements ``GET /api/announcements`` returns.
MAX_LISTED = 100
#: The scheduler re-checks at least this often, so an announcement scheduled on another
#: instance (or on this one while it slept) is broadcast at most this late.
RECHECK_SECONDS = 5.0


async def create(svc: Services, request: AnnouncementCreate) -> dict[str, Any]:
    """Store ``request``; broadcast it now if it has started, else the scheduler will."""
    if request.ends_at is not None and request.ends_at <= datetime.now(UTC):
        raise InvalidInput(
            "ends_at is in the past",
            errors=[{"loc": ["ends_at"], "msg": "must be in the future"}],
        )
    item, started = await store.insert(
        svc.pool, request.title, request.body, request.level, request.starts_at, request.ends_at
    )
    if started:
        await svc.broadcast("announcement.created", item)
    return item


async def active(svc: Services) -> list[dict[str, Any]]:
    """Announcements running now (started, not ended), most recently started first."""
    return await store.active(svc.pool, MAX_LISTED)


async def current_and_scheduled(svc: Services) -> list[dict[str, Any]]:
    """Announcements running now or scheduled to start, for admins."""
    return await store.current_and_scheduled(svc.pool, MAX_LISTED)


async def delete(svc: Services, id_: int) -> None:
    """Delete announcement ``id_`` and tell everyone connected; NotFound if missing."""
    if not await store.delete(svc.pool, id_):
        raise NotFound("no such announcement")
    await svc.broadcast("announcement.deleted", {"id": id_})


async def announce_due(svc: Services) -> list[dict[str, Any]]:
    """Claim the announcements that have started and broadcast them; return those sent.

    Safe to run on every instance at once: each announcement is claimed by one caller.
    One that ended before anyone claimed it is claimed but not broadcast.
    """
    sent = []
    for item, is_active in await store.claim_due(svc.pool):
        if is_active:
            await svc.broadcast("announcement.created", item)
            sent.append(item)
    return sent


async def run_scheduler(svc: Services, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
    """Broadcast each scheduled announcement when it starts; runs until cancelled.

    Sleeps until the next known start, but never longer than ``recheck_seconds``, so
    announcements created elsewhere meanwhile are found. Errors (database down) are
    logged and retried after ``recheck_seconds``.
    """
    async def step() -> float | None:
        await announce_due(svc)
        return await store.seconds_to_next(svc.pool)

    await run_when_due("announcement scheduler", step, recheck_seconds=recheck_seconds)
