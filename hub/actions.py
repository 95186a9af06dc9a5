"""Action buttons: a user chooses one of a notification's actions, once, and the choice
reaches the backend that created it on the ``{prefix}actions`` Redis stream.

``choose`` records the choice, marks the notification read (as ``mark_read`` does:
cross-device dismissal, the unread count) and appends one ``notification.updated``
event, all in one transaction, which also queues the choice in ``action_outbox``
(``db.notifications.record_action``). The relay (``run_relay``, on every ``serve``
instance with Redis) leases queued choices, appends them to the stream and deletes
them: a choice made while Redis is down is appended once it is back. A choice is
appended at least once; it is appended twice only when an append reached Redis but its
answer did not come back, or its row could not be deleted after it: consumers
de-duplicate on the entry's ``id`` (docs/ingest.md, "Action choices").
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Any

import orjson

from db import actions as outbox
from db import notifications as store
from db.errors import DatabaseUnavailable
from hub.errors import Conflict, NotFound
from hub.notifications import dismiss_read
from hub.periodic import run_when_due
from hub.services import Services
from pubsub.streams import Fields, StreamWriter

log = logging.getLogger("notifyhub")

#: The stream, after ``HUB_REDIS_PREFIX``.
STREAM = "actions"
#: The relay polls at least this often, for choices recorded by other instances (its
#: own wake it at once) and after a failed append.
RECHECK_SECONDS = 2.0
#: How long a leased choice is left to the relay that leased it: a relay that dies
#: after leasing delays those choices by at most this.
LEASE_SECONDS = 30.0
#: The most choices one lease takes (one append round trip), and leases per step.
BATCH = 500
MAX_BATCHES = 20


async def choose(svc: Services, user_id: str, id_: int, action_id: str) -> dict[str, Any]:
    """Record ``action_id`` as ``user_id``'s choice on their notification ``id_``; the
    notification as it is now, with ``unread_count`` and ``unseen_count`` (the event
    ``notification.updated`` carries the same, the notification apart).

    The first choice marks it read and emits ``notification.updated``; the same choice
    again changes nothing and answers the same. NotFound: not the user's notification
    (or expired), or it has no action ``action_id``; Conflict: another action was
    chosen before. Both change nothing.
    """
    async with svc.write() as work:
        found = await store.for_action(work.conn, id_, user_id)  # locks the row
        if found is None or found.pop("expired"):
            raise NotFound("no such notification")
        if not any(a["id"] == action_id for a in found["actions"]):
            raise NotFound("the notification has no such action")
        chosen = found["action"]
        if chosen is not None:
            if chosen["id"] != action_id:
                raise Conflict(f"another action ({chosen['id']}) was chosen already; a "
                               "choice is final")
            unread, unseen = (await store.counts_locked(work.conn, [user_id]))[user_id]
            return {**found, "unread_count": unread, "unseen_count": unseen}
        updated = await store.record_action(work.conn, id_, action_id)
        dismissals = await dismiss_read(svc, work.conn, [] if found["read"] else [id_])
        unread, unseen = (await store.counts_locked(work.conn, [user_id]))[user_id]
        data = {**updated, "unread_count": unread, "unseen_count": unseen}
        # The event's shape is the one every notification.updated has (a group joined
        # too): the notification, and the counts right after it.
        await work.append([(user_id, "notification.updated", {
            "notification": updated, "unread_count": unread, "unseen_count": unseen})])
    svc.actions_pending.set()  # after the commit: the relay finds the queued choice
    if dismissals:
        svc.deliveries_due.set()
    return data


def entry(row: dict[str, Any]) -> Fields:
    """The stream entry of a queued choice (docs/ingest.md, "Action choices")."""
    return {
        "id": str(row["id"]),
        "notification_id": str(row["notification_id"]),
        "user_id": row["user_id"],
        "type": row["type"],
        "action_id": row["action_id"],
        "data": orjson.dumps(row["data"]).decode(),
        "acted_at": timestamp(row["acted_at"]),
    }


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the REST API writes timestamps."""
    return orjson.dumps(moment, option=orjson.OPT_UTC_Z).decode().strip('"')


async def relay_batch(svc: Services, stream: StreamWriter, limit: int = BATCH) -> int:
    """Lease up to ``limit`` queued choices, append them to ``stream`` and delete them;
    return how many were leased.

    Raises ``BrokerUnavailable`` when the append failed (the lease is ended, so the next
    try takes them again) and ``DatabaseUnavailable`` when the database did (a choice
    already appended is appended again after its lease).
    """
    rows = await outbox.claim(svc.pool, limit, LEASE_SECONDS)
    if not rows:
        return 0
    ids = [row["id"] for row in rows]
    try:
        await stream.append([entry(row) for row in rows])
    except Exception:
        with contextlib.suppress(DatabaseUnavailable):  # else the lease ends by itself
            await outbox.release(svc.pool, ids)
        raise
    await outbox.delete(svc.pool, ids)
    return len(rows)


async def relay_due(svc: Services, stream: StreamWriter) -> float | None:
    """Relay what is queued (at most ``MAX_BATCHES`` leases); 0 if more is left."""
    for _ in range(MAX_BATCHES):
        if await relay_batch(svc, stream) < BATCH:
            return None  # nothing known: look again after RECHECK_SECONDS, or when woken
    return 0.0


async def run_relay(
    svc: Services, stream: StreamWriter, *, recheck_seconds: float = RECHECK_SECONDS
) -> None:
    """Append every queued choice to ``stream``; runs until cancelled. Failures (Redis
    or the database down) are logged and tried again after ``recheck_seconds``."""
    await run_when_due(
        "action relay", lambda: relay_due(svc, stream),
        recheck_seconds=recheck_seconds, wake=svc.actions_pending,
    )
