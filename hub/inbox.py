"""The inbox beyond read: seen, archived and snoozed notifications (docs/api.md,
"The inbox").

Every change is recorded in the user's event log in its transaction and published
after the commit (``Services.write``), with the user's ``unread_count`` and
``unseen_count`` after it, as ``notifications.read`` is: a client on any device keeps
both badges exact from its ``hello`` and the events. Both counts are of the inbox: an
archived, snoozed or expired notification is in neither.

A snoozed notification returns at its time through the notification scheduler
(``hub.scheduled.send_due`` calls ``return_due``): one transaction takes the due rows
(``SKIP LOCKED``) and moves them back as new, unread and unseen, with a new position at
the top of the inbox and a ``notification.unsnoozed`` event each, so each returns once
however many instances run. The same transaction decides their email, push, SMS and
webhook deliveries again under the preferences of that moment
(``hub.notifications.decide_again``); a snooze skips those not sent yet
(docs/delivery.md, "Snoozed notifications").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from db import deliveries as delivery_store
from db import inbox as store
from db import notifications as notification_store
from db.pool import Connection
from hub import notifications
from hub.errors import InvalidInput, NotFound
from hub.models import Selection
from hub.services import Services

#: The most snoozed notifications one return transaction moves back.
BATCH = 500


async def mark_seen(svc: Services, user_id: str, selection: Selection) -> dict[str, int]:
    """Mark the selected notifications seen; emits ``notification.seen``."""
    return await _change(svc, user_id, "notification.seen",
                         lambda conn: store.seen(conn, user_id, *_chosen(selection)))


async def archive(svc: Services, user_id: str, selection: Selection) -> dict[str, int]:
    """Archive the selected notifications; emits ``notification.archived``."""
    return await _change(svc, user_id, "notification.archived",
                         lambda conn: store.archive(conn, user_id, *_chosen(selection)))


async def unarchive(svc: Services, user_id: str, selection: Selection) -> dict[str, int]:
    """Move the selected archived notifications back to the inbox; emits
    ``notification.unarchived``."""
    return await _change(svc, user_id, "notification.unarchived",
                         lambda conn: store.unarchive(conn, user_id, *_chosen(selection)))


def _chosen(selection: Selection) -> tuple[list[int] | None, int | None]:
    return selection.ids, selection.before_id


async def _change(
    svc: Services, user_id: str, type_: str,
    change: Callable[[Connection], Awaitable[list[int]]],
) -> dict[str, int]:
    """Apply ``change`` and, if it changed anything, log ``type_`` with the ids and counts.

    Rows are locked (the update) before the user's counter (``append``), the order every
    notification write takes.
    """
    async with svc.write() as work:
        changed = await change(work.conn)
        unread, unseen = (await notification_store.counts_locked(work.conn, [user_id]))[user_id]
        if changed:
            await work.append([(user_id, type_, {
                "ids": changed, "unread_count": unread, "unseen_count": unseen,
            })])
    return {"updated": len(changed), "unread_count": unread, "unseen_count": unseen}


async def snooze(svc: Services, user_id: str, id_: int, until: datetime) -> dict[str, Any]:
    """Snooze ``user_id``'s notification ``id_`` until ``until`` (validated as in the
    future); emits ``notification.snoozed``. NotFound if it is not theirs; InvalidInput,
    changing nothing, if it expires by then. Snoozing again moves the time; an archived
    one leaves the archive and returns to the inbox at ``until``."""
    async with svc.write() as work:
        found = await notification_store.get(work.conn, id_, user_id)
        if found is None:
            raise NotFound("no such notification")
        if found["expires_at"] is not None and until >= found["expires_at"]:
            raise InvalidInput("until is not before the notification expires", [
                {"loc": ["until"], "msg": "must be before the notification's expires_at"}
            ])
        at = await store.snooze(work.conn, user_id, id_, until)
        if at is None:  # deleted (or expired) since it was read
            raise NotFound("no such notification")
        # Nothing goes out while it is away: its return decides its deliveries again.
        await delivery_store.snoozed(work.conn, [id_])
        unread, unseen = (await notification_store.counts_locked(work.conn, [user_id]))[user_id]
        data = {"id": id_, "snoozed_until": at, "unread_count": unread, "unseen_count": unseen}
        await work.append([(user_id, "notification.snoozed", data)])
    svc.schedule_changed.set()  # after the commit: the scheduler may sleep past ``until``
    return data


async def return_due(svc: Services, limit: int = BATCH) -> int:
    """Move up to ``limit`` snoozed notifications whose time has come back to the inbox,
    in one transaction, each with a ``notification.unsnoozed`` event
    (``{"notification", "unread_count", "unseen_count"}``); return how many."""
    async with svc.write() as work:
        back = await store.return_due(work.conn, limit)
        if not back:
            return 0
        # Through the channels too, in this transaction: once, as the return is.
        redelivered = await notifications.decide_again(svc, work.conn, back)
        counts = await notification_store.counts_locked(work.conn, [n["user_id"] for n in back])
        # Each event carries the counts right after it: every one returned adds one to
        # both (it is back unread and unseen), so a user's earlier events in this batch
        # count the later ones out.
        later = Counter(n["user_id"] for n in back)
        changes = []
        for n in sorted(back, key=lambda n: n["position"]):
            user = n["user_id"]
            later[user] -= 1
            unread, unseen = counts[user]
            changes.append((user, "notification.unsnoozed", {
                "notification": n, "unread_count": unread - later[user],
                "unseen_count": unseen - later[user],
            }))
        await work.append(changes)
    if redelivered:
        svc.deliveries_due.set()  # after the commit: the workers see the new rows
    return len(back)


async def seconds_to_return(svc: Services) -> float | None:
    """Seconds until the next snoozed notification returns; None if none is snoozed."""
    return await store.seconds_to_return(svc.pool)
