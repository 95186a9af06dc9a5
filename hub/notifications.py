"""Notification operations: create (templates, preferences, idempotency), read, delete.

Every change is recorded in the user's event log in the same transaction and handed
to the broker after commit (CONTRACT §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from db import events as event_log
from db import notifications as store
from hub import preferences, templates
from hub.errors import InvalidInput, NotFound
from hub.models import NotificationCreate
from hub.services import Services

Event = tuple[str, int, str, Any]


@dataclass
class Created:
    """What a create call made; ``replayed`` when an idempotency key was seen before."""

    items: list[dict[str, Any]]
    suppressed: list[str]
    replayed: bool = False
    events: list[Event] = field(default_factory=list, repr=False)


async def create(svc: Services, request: NotificationCreate) -> Created:
    """Create ``request`` for each recipient whose preferences allow it, exactly once."""
    async with svc.pool.acquire() as conn, conn.transaction():
        created = await create_in(conn, request)
    if not created.replayed:
        svc.metrics.notifications_created.inc(len(created.items))
        svc.metrics.notifications_suppressed.inc(len(created.suppressed))
    await svc.publish(created.events)
    return created


async def create_in(conn: asyncpg.Connection, request: NotificationCreate) -> Created:
    """``create`` inside the caller's transaction; the caller publishes ``events``."""
    key = request.idempotency_key
    if key is not None:
        # Counters first, in sorted order, before the idempotency claim: the hub-wide
        # lock order that keeps concurrent writers (and ingest batches) from deadlocking.
        # Without a claim, ``append`` below takes them in that order anyway.
        await event_log.lock(conn, request.recipients())
    if key is not None and not await store.claim_request(conn, key):
        ids, suppressed = await store.get_request(conn, key)
        return Created(await store.by_ids(conn, ids), suppressed, replayed=True)
    title, body, link = await _content(conn, request)
    allowed, suppressed = await preferences.in_app_recipients(
        conn, request.recipients(), request.type
    )
    items = await store.insert_many(
        conn, allowed, request.type, title, body, link, request.data, request.priority
    )
    if key is not None:
        await store.finish_request(conn, key, [n["id"] for n in items], suppressed)
    events = await event_log.append(
        conn, [(n["user_id"], "notification.created", n) for n in items]
    )
    return Created(items, suppressed, events=events)


async def _content(
    conn: asyncpg.Connection, request: NotificationCreate
) -> tuple[str, str, str | None]:
    """Title, body and link: explicit fields win over the rendered template."""
    if request.template is None:
        assert request.title is not None
        return request.title, request.body or "", request.link
    try:
        tpl = await templates.get(conn, request.template)
    except NotFound:
        raise InvalidInput(
            f"unknown template {request.template!r}",
            errors=[{"loc": ["template"], "msg": "unknown template"}],
        ) from None
    title = request.title or templates.render(tpl["title"], request.data)[:200]
    body = request.body if request.body is not None else templates.render(tpl["body"], request.data)
    link = request.link
    if link is None and tpl["link"]:
        link = templates.render(tpl["link"], request.data)
    return title, body[:2000], link[:2000] if link else link


async def page(
    pool: asyncpg.Pool,
    user_id: str,
    *,
    limit: int = 20,
    before: int | None = None,
    unread_only: bool = False,
    type_: str | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    """One page of ``user_id``'s inbox, newest first, with the unread count."""
    async with pool.acquire() as conn:
        items, next_before = await store.page(
            conn, user_id, before=before, unread_only=unread_only, type_=type_,
            query=query, limit=limit,
        )
        unread = await store.unread_count(conn, user_id)
    return {"items": items, "next_before": next_before, "unread_count": unread}


async def unread_count(pool: asyncpg.Pool, user_id: str) -> int:
    return await store.unread_count(pool, user_id)


async def mark_read(svc: Services, user_id: str, ids: list[int]) -> dict[str, int]:
    """Mark ``ids`` read (others' ids are ignored); emits ``notifications.read``."""
    return await _mark(svc, user_id, ids=ids, upto=None)


async def mark_all_read(svc: Services, user_id: str, upto: int | None) -> dict[str, int]:
    """Mark all unread (ids <= ``upto`` when given) read; emits ``notifications.read``."""
    return await _mark(svc, user_id, ids=None, upto=upto)


async def _mark(
    svc: Services, user_id: str, *, ids: list[int] | None, upto: int | None
) -> dict[str, int]:
    async with svc.pool.acquire() as conn, conn.transaction():
        if ids is None:
            changed = await store.mark_all_read(conn, user_id, upto)
        else:
            changed = await store.mark_read(conn, user_id, ids)
        unread = await store.unread_count(conn, user_id)
        events = []
        if changed:
            data = {"ids": changed, "all": ids is None, "unread_count": unread}
            events = await event_log.append(conn, [(user_id, "notifications.read", data)])
    await svc.publish(events)
    return {"updated": len(changed), "unread_count": unread}


async def forget_message(
    conn: asyncpg.Connection, user_id: str, message_id: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """Inside the caller's transaction, delete ``user_id``'s notifications quoting a
    direct message that was removed for everyone; returns the events to append.

    The caller appends them: rows are locked before counters, the order every
    notification write uses.
    """
    ids = await store.delete_for_message(conn, user_id, message_id)
    if not ids:
        return []
    unread = await store.unread_count(conn, user_id)
    return [(user_id, "notification.deleted", {"id": i, "unread_count": unread}) for i in ids]


async def delete(svc: Services, user_id: str, id_: int) -> None:
    """Delete ``user_id``'s notification ``id_``; NotFound if it is not theirs."""
    async with svc.pool.acquire() as conn, conn.transaction():
        if not await store.delete(conn, user_id, id_):
            raise NotFound("no such notification")
        unread = await store.unread_count(conn, user_id)
        events = await event_log.append(
            conn, [(user_id, "notification.deleted", {"id": id_, "unread_count": unread})]
        )
    await svc.publish(events)
