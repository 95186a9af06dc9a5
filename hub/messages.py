"""Direct messages: idempotent send (with a ``new_message`` notification), read, hide.

Transport-free: the REST routes and the WebSocket ``message.send`` frame both call
``send``. Every change is recorded in the event logs of the users who see it, in the
same transaction, and published after commit (CONTRACT §5).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import asyncpg

from db import events as event_log
from db import messages as store
from hub import notifications
from hub.errors import Conflict, Forbidden, InvalidInput, NotFound
from hub.models import MessageSend, NotificationCreate
from hub.services import Services

log = logging.getLogger("notifyhub")

Event = tuple[str, int, str, Any]

PREVIEW_CHARS = 140
#: How often a send retries when the message holding its client_id vanishes meanwhile.
_SEND_ATTEMPTS = 3
_MAX_ID = 2**63 - 1


async def send(svc: Services, sender_id: str, body: MessageSend) -> tuple[dict[str, Any], bool]:
    """Send ``body`` from ``sender_id``; returns ``(message, created)``.

    A repeated ``client_id`` returns the original message with ``created`` False and
    changes nothing; Conflict if the original went to someone else or said something
    else. The recipient gets a ``new_message`` notification unless their preferences
    suppress it.
    """
    _check(sender_id, body)
    for _ in range(_SEND_ATTEMPTS):
        async with svc.pool.acquire() as conn, conn.transaction():
            message = await store.insert(
                conn, sender_id, body.recipient_id, body.body, body.client_id
            )
            if message is None:
                assert body.client_id is not None
                original = await store.by_client_id(conn, sender_id, body.client_id)
                if original is None:
                    continue  # deleted for everyone since the insert saw it: try again
                if (original["recipient_id"], original["body"]) != (body.recipient_id, body.body):
                    raise Conflict("this client_id was already used for a different message")
                return original, False
            events, note = await _record(conn, message)
        svc.metrics.messages_sent.inc()
        svc.metrics.notifications_created.inc(len(note.items))
        svc.metrics.notifications_suppressed.inc(len(note.suppressed))
        await svc.publish(events)
        return message, True
    raise Conflict("the message with this client_id kept changing; try again")


def _check(sender_id: str, body: MessageSend) -> None:
    if body.recipient_id == sender_id:
        raise InvalidInput(
            "you cannot send a message to yourself",
            [{"loc": ["recipient_id"], "msg": "must be another user"}],
        )
    if not body.body.strip():
        raise InvalidInput("the message is empty", [{"loc": ["body"], "msg": "is blank"}])
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the driver.
    for name in ("body", "client_id"):
        if "\x00" in (getattr(body, name) or ""):
            raise InvalidInput(f"{name} contains a NUL character",
                               [{"loc": [name], "msg": "contains NUL"}])


async def _record(
    conn: asyncpg.Connection, message: dict[str, Any]
) -> tuple[list[Event], notifications.Created]:
    """Log ``message.created`` for both parties, then notify the recipient.

    Both parties' counters are locked together (sorted) before the notification locks
    the recipient's again, so opposite sends between two users cannot deadlock.
    """
    sender, recipient = message["sender_id"], message["recipient_id"]
    events = await event_log.append(
        conn, [(sender, "message.created", message), (recipient, "message.created", message)]
    )
    note = await _notify(conn, message)
    return events + note.events, note


async def _notify(conn: asyncpg.Connection, message: dict[str, Any]) -> notifications.Created:
    """The recipient's ``new_message`` notification (possibly suppressed by preferences).

    A broken ``new_message`` template (an admin may edit it) must not make chat fail,
    so rendering errors fall back to fixed wording.
    """
    sender = message["sender_id"]
    request = NotificationCreate(
        user_id=message["recipient_id"],
        type="new_message",
        template="new_message",
        data={
            "sender_id": sender,
            "preview": message["body"][:PREVIEW_CHARS],
            "message_id": message["id"],
        },
    )
    try:
        async with conn.transaction():  # a savepoint: the fallback starts clean
            return await notifications.create_in(conn, request)
    except InvalidInput:
        log.warning("the new_message template failed to render; using fixed wording",
                    exc_info=True)
    fallback = request.model_copy(update={
        "template": None,
        "title": f"New message from {sender}",
        "body": request.data["preview"],
        "link": f"/messages/{sender}",
    })
    return await notifications.create_in(conn, fallback)


async def conversations(pool: asyncpg.Pool, user_id: str, limit: int = 20) -> dict[str, Any]:
    """``user_id``'s conversations, newest last message first, with unread counts."""
    return {"items": await store.conversations(pool, user_id, limit)}


async def conversation(
    pool: asyncpg.Pool, user_id: str, other_id: str, *, limit: int = 50, before: int | None = None
) -> dict[str, Any]:
    """One page of the messages between ``user_id`` and ``other_id``, newest first."""
    items, next_before = await store.page(pool, user_id, other_id, before=before, limit=limit)
    return {"items": items, "next_before": next_before}


async def mark_read(
    svc: Services, user_id: str, *, ids: list[int] | None = None, other_id: str | None = None
) -> dict[str, int]:
    """Mark unread messages ``user_id`` received read, by ``ids`` or all from ``other_id``.

    Ids of other messages are ignored. ``messages.read`` goes to the reader with every
    id and to each sender with theirs; nothing is emitted when nothing changed.
    """
    async with svc.pool.acquire() as conn, conn.transaction():
        if ids is not None:
            wanted = [i for i in ids if 0 < i <= _MAX_ID]  # others cannot be stored ids
            changed = await store.mark_read(conn, user_id, ids=wanted) if wanted else []
        else:
            changed = await store.mark_read(conn, user_id, sender_id=other_id)
        events: list[Event] = []
        if changed:
            by_sender: dict[str, list[int]] = defaultdict(list)
            for id_, sender in changed:
                by_sender[sender].append(id_)
            data = [(user_id, "messages.read",
                     {"ids": [i for i, _ in changed], "reader_id": user_id})]
            data += [(sender, "messages.read", {"ids": sent, "reader_id": user_id})
                     for sender, sent in by_sender.items()]
            events = await event_log.append(conn, data)
    await svc.publish(events)
    return {"updated": len(changed)}


async def delete(svc: Services, user_id: str, id_: int, *, for_everyone: bool = False) -> None:
    """Hide message ``id_`` for ``user_id``, or remove it for both (its sender only).

    NotFound if it is not theirs or already hidden for them; Forbidden when the
    recipient asks to remove it for everyone. ``message.deleted`` goes to whoever it
    disappeared for.
    """
    async with svc.pool.acquire() as conn, conn.transaction():
        row = await store.visible_for_update(conn, user_id, id_)
        if row is None:
            raise NotFound("no such message")
        if for_everyone:
            if row["sender_id"] != user_id:
                raise Forbidden("only the sender can delete a message for everyone")
            await store.delete(conn, id_)
            users = [user_id]
            if not row["hidden_for_recipient"]:
                users.append(row["recipient_id"])
        else:
            await store.hide(conn, user_id, id_)
            users = [user_id]
        changes = [(user, "message.deleted", {"id": id_}) for user in users]
        if for_everyone:
            # The recipient's new_message notification quotes the text: it goes too.
            # Its rows are deleted before any counter is locked (the hub's lock order).
            changes += await notifications.forget_message(conn, row["recipient_id"], id_)
        events = await event_log.append(conn, changes)
    await svc.publish(events)
