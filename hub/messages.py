"""Direct messages: idempotent send (with a ``new_message`` notification), read, hide.

Transport-free: the REST routes and the WebSocket ``message.send`` frame both call
``send``. Every change is recorded in the event logs of the users who see it, in the
same write (one statement, or one transaction), and published after it (docs/live.md):
sends through the group commit (``writer``), the rest through a unit of work
(``Services.write``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from db import messages as store
from db.errors import DatabaseUnavailable
from db.pool import Connection
from hub import notifications
from hub.errors import Conflict, Forbidden, HubError, InvalidInput, NotFound
from hub.models import MessageSend, NotificationCreate
from hub.services import Change, Event, Services
from hub.writer import GroupCommit, after_write

log = logging.getLogger("notifyhub")

#: A send for the group commit: ``(sender_id, body)``.
Send = tuple[str, MessageSend]

PREVIEW_CHARS = 140
#: How often a send retries when the message holding its client_id vanishes meanwhile.
_SEND_ATTEMPTS = 3
_MAX_ID = 2**63 - 1


@dataclass
class Sent:
    """What one send did: the message, whether it is new, and the events to publish."""

    message: dict[str, Any]
    created: bool
    events: list[Event] = field(default_factory=list, repr=False)
    note: notifications.Created | None = field(default=None, repr=False)


class _Vanished(Exception):
    """The message holding a repeated client_id was deleted for everyone meanwhile."""


async def send(svc: Services, sender_id: str, body: MessageSend) -> tuple[dict[str, Any], bool]:
    """Send ``body`` from ``sender_id``; returns ``(message, created)``.

    A repeated ``client_id`` returns the original message with ``created`` False and
    changes nothing; Conflict if the original went to someone else or said something
    else. The recipient gets a ``new_message`` notification unless their preferences
    suppress it. Concurrent sends of this instance commit together (``hub.writer``);
    this returns once the message is committed, as its events are being published.
    """
    _check(sender_id, body)
    for _ in range(_SEND_ATTEMPTS):
        try:
            sent = await writer(svc).submit((sender_id, body))
        except _Vanished:
            continue  # deleted for everyone since the insert saw it: try again
        return sent.message, sent.created
    raise Conflict("the message with this client_id kept changing; try again")


def writer(svc: Services) -> GroupCommit[Send, Sent]:
    """The group-commit writer of ``svc``'s direct messages (made on first use)."""
    return svc.writer("messages", lambda: GroupCommit(
        partial(_commit, svc),
        after=partial(_publish, svc),
        transient=(DatabaseUnavailable,),
        # Two sends with one client_id never share a batch: the second replays.
        key=lambda job: f"{job[0]}\n{job[1].client_id}" if job[1].client_id else None,
    ))


async def _commit(svc: Services, jobs: list[Send]) -> list[Sent | BaseException]:
    """One write for a batch of sends, without a transaction (``send_many_alone``);
    should a sender have used its client_id before, or a notification be refused, that
    writes nothing and the batch is made again in a transaction (``send_many_in``)."""
    async with svc.pool.acquire() as conn:
        results: list[Sent] | list[Sent | Exception] = \
            await notifications.written_alone_or_in_transaction(
                conn, partial(send_many_alone, conn, jobs), partial(send_many_in, conn, jobs))
    new = [r for r in results if isinstance(r, Sent) and r.created]
    svc.metrics.messages_sent.inc(len(new))
    notes = [r.note for r in new if r.note is not None]
    svc.metrics.notifications_created.inc(sum(len(n.items) for n in notes))
    svc.metrics.notifications_suppressed.inc(sum(len(n.suppressed) for n in notes))
    return list(results)


async def _publish(svc: Services, results: list[Sent | BaseException]) -> None:
    events = [e for r in results if isinstance(r, Sent) for e in r.events]
    # Each user's events in seq order: a batch logs every message before any notification.
    await svc.publish(sorted(events, key=lambda e: (e[0], e[1])))


async def send_many_in(conn: Connection, jobs: list[Send]) -> list[Sent | Exception]:
    """Store ``(sender_id, body)`` sends inside the caller's transaction, set-based.

    One result per send, in order. ``(sender, client_id)`` pairs must be distinct. Three
    round trips: the messages, then what their ``new_message`` notifications read
    (``notifications.create_logging_in``), then one statement that stores the
    notifications and logs every event, the messages' first. Lock order: the message
    rows (a repeated client_id waits for its first insert), then every party's counter
    in sorted order (``db.events.append``, after the new notifications are stored in
    the same statement).
    """
    stored = await store.insert_many(conn, [
        (sender, body.recipient_id, body.body, body.client_id) for sender, body in jobs
    ])
    results: list[Sent | Exception | None] = [None] * len(jobs)
    repeated = [n for n, message in enumerate(stored) if message is None]
    if repeated:
        originals = await store.by_client_ids(
            conn, [(jobs[n][0], jobs[n][1].client_id or "") for n in repeated]
        )
        for n in repeated:
            sender, body = jobs[n]
            original = originals.get((sender, body.client_id or ""))
            if original is None:
                results[n] = _Vanished()
            elif (original["recipient_id"], original["body"]) != (body.recipient_id, body.body):
                results[n] = Conflict("this client_id was already used for a different message")
            else:
                results[n] = Sent(original, False)
    new = [(n, message) for n, message in enumerate(stored) if message is not None]
    messages = [message for _, message in new]
    events, notes = await _notify(conn, messages, _created(messages))
    for k, ((n, message), note) in enumerate(zip(new, notes, strict=True)):
        results[n] = Sent(message, True, events[2 * k:2 * k + 2] + note.events, note)
    return [r for r in results if r is not None]


async def send_many_alone(conn: Connection, jobs: list[Send]) -> list[Sent]:
    """``send_many_in`` for sends that are all new, in two round trips and no
    transaction: what the ``new_message`` notifications read, with the messages' ids and
    time, then one statement that stores the messages and the notifications and logs
    every event (``db.messages.inserting``). It raises ``ClaimTaken`` when a sender had
    used its client_id before, and ``notifications.Transactional`` when a notification
    is refused (its template failed: the fixed wording is another write), having
    written nothing."""
    # What the notifications read does not depend on the message ids they quote: each
    # request gets its id once the read gave it (set on the fresh request, not copied).
    requests = [_new_message({"id": 0, "sender_id": sender, "recipient_id": body.recipient_id,
                              "body": body.body}) for sender, body in jobs]
    batch = await notifications.read_for(conn, requests, messages=len(jobs))
    messages = [
        {"id": id_, "sender_id": sender, "recipient_id": body.recipient_id,
         "body": body.body, "client_id": body.client_id, "created_at": batch.now,
         "read_at": None}
        for id_, (sender, body) in zip(batch.message_ids, jobs, strict=True)
    ]
    for request, message in zip(requests, messages, strict=True):
        request.data["message_id"] = message["id"]
    events, results = await notifications.create_logging_in(
        conn, requests, first=_created(messages), alone=True,
        batch=batch, checked=store.inserting(messages),
    )
    with after_write(True):  # stored: never made again
        notes = [r for r in results if isinstance(r, notifications.Created)]
        assert len(notes) == len(messages), "a refused request raises Transactional"
        return [Sent(m, True, events[2 * k:2 * k + 2] + note.events, note)
                for k, (m, note) in enumerate(zip(messages, notes, strict=True))]


def _created(messages: list[dict[str, Any]]) -> list[Change]:
    """Each message's ``message.created``, to its sender then its recipient."""
    return [(m[party], "message.created", m) for m in messages
            for party in ("sender_id", "recipient_id")]


def _check(sender_id: str, body: MessageSend) -> None:
    if body.recipient_id == sender_id:
        raise InvalidInput(
            "you cannot send a message to yourself",
            [{"loc": ["recipient_id"], "msg": "must be another user"}],
        )
    if not body.body.strip():
        raise InvalidInput("the message is empty", [{"loc": ["body"], "msg": "is blank"}])


async def _notify(
    conn: Connection, messages: list[dict[str, Any]], changes: list[Change],
) -> tuple[list[Event], list[notifications.Created]]:
    """Each recipient's ``new_message`` notification (possibly suppressed by
    preferences), with ``changes`` (the messages' own) logged before their events: the
    events of ``changes``, in order, and one ``Created`` per message.

    A broken ``new_message`` template (an admin may edit it) must not make chat fail,
    so a send whose rendering fails falls back to fixed wording.
    """
    requests = [_new_message(m) for m in messages]
    events, results = await notifications.create_logging_in(conn, requests, first=changes)
    failed = [k for k, result in enumerate(results) if isinstance(result, HubError)]
    if failed:
        log.warning("the new_message template failed to render (%s); using fixed wording",
                    results[failed[0]])
        fallbacks = await notifications.create_many_in(
            conn, [_fixed_wording(requests[k]) for k in failed]
        )
        for k, fallback in zip(failed, fallbacks, strict=True):
            results[k] = fallback
    created = []
    for result in results:
        if isinstance(result, HubError):  # fixed wording cannot fail to render
            raise result
        created.append(result)
    return events, created


def _new_message(message: dict[str, Any]) -> NotificationCreate:
    return NotificationCreate(
        user_id=message["recipient_id"],
        type="new_message",
        template="new_message",
        data={
            "sender_id": message["sender_id"],
            "preview": message["body"][:PREVIEW_CHARS],
            "message_id": message["id"],
        },
    )


def _fixed_wording(request: NotificationCreate) -> NotificationCreate:
    sender = request.data["sender_id"]
    return request.model_copy(update={
        "template": None,
        "title": f"New message from {sender}",
        "body": request.data["preview"],
        "link": f"/messages/{sender}",
    })


async def conversations(svc: Services, user_id: str, limit: int = 20) -> dict[str, Any]:
    """``user_id``'s conversations, newest last message first, with unread counts."""
    return {"items": await store.conversations(svc.pool, user_id, limit)}


async def conversation(
    svc: Services, user_id: str, other_id: str, *, limit: int = 50, before: int | None = None
) -> dict[str, Any]:
    """One page of the messages between ``user_id`` and ``other_id``, newest first."""
    items, next_before = await store.page(svc.pool, user_id, other_id, before=before, limit=limit)
    return {"items": items, "next_before": next_before}


async def mark_read(
    svc: Services, user_id: str, *, ids: list[int] | None = None, other_id: str | None = None
) -> dict[str, int]:
    """Mark unread messages ``user_id`` received read, by ``ids`` or all from ``other_id``.

    Ids of other messages are ignored. ``messages.read`` goes to the reader with every
    id and to each sender with theirs; nothing is emitted when nothing changed.
    """
    async with svc.write() as work:
        if ids is not None:
            wanted = [i for i in ids if 0 < i <= _MAX_ID]  # others cannot be stored ids
            changed = await store.mark_read(work.conn, user_id, ids=wanted) if wanted else []
        else:
            changed = await store.mark_read(work.conn, user_id, sender_id=other_id)
        if changed:
            by_sender: dict[str, list[int]] = defaultdict(list)
            for id_, sender in changed:
                by_sender[sender].append(id_)
            data = [(user_id, "messages.read",
                     {"ids": [i for i, _ in changed], "reader_id": user_id})]
            data += [(sender, "messages.read", {"ids": sent, "reader_id": user_id})
                     for sender, sent in by_sender.items()]
            await work.append(data)
    return {"updated": len(changed)}


async def delete(svc: Services, user_id: str, id_: int, *, for_everyone: bool = False) -> None:
    """Hide message ``id_`` for ``user_id``, or remove it for both (its sender only).

    NotFound if it is not theirs or already hidden for them; Forbidden when the
    recipient asks to remove it for everyone. ``message.deleted`` goes to whoever it
    disappeared for.
    """
    async with svc.write() as work:
        conn = work.conn
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
            # Its rows are deleted before any counter is locked (the hub's lock order),
            # then every user's counter here, sorted, before its counts are read.
            changes += await notifications.forget_message(conn, row["recipient_id"], id_,
                                                          users)
        await work.append(changes)
