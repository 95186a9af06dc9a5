"""Notification operations: create (templates, preferences, idempotency), read, delete.

Every change is recorded in the user's event log in the same transaction and handed
to the broker after commit (docs/live.md): creates through the group commit
(``writer``), the rest through a unit of work (``Services.write``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from db import contacts as contact_store
from db import deliveries as delivery_store
from db import events as event_log
from db import notifications as store
from db.errors import DatabaseUnavailable
from db.pool import Connection
from hub import preferences, templates
from hub.errors import Conflict, HubError, InvalidInput, NotFound
from hub.models import NotificationCreate, Preferences, safe_link
from hub.services import Event, Services
from hub.settings import WEEKDAYS
from hub.writer import GroupCommit

#: A notification's title, body and link.
Content = tuple[str, str, str | None]
#: A batch closes once its creates reach this many recipients, so a burst of large
#: fan-outs does not hold every recipient's counter lock for long.
BATCH_RECIPIENTS = 2000
#: The preferences of a user who never saved any.
_DEFAULT_PREFS = Preferences()
#: The delivery channels quiet hours hold and escalation delays (people's devices; a
#: webhook is a machine).
QUIET_HELD = frozenset({"email", "push", "sms"})


@dataclass
class Created:
    """What a create call made; ``replayed`` when an idempotency key was seen before."""

    items: list[dict[str, Any]]
    suppressed: list[str]
    replayed: bool = False
    events: list[Event] = field(default_factory=list, repr=False)


async def create(svc: Services, request: NotificationCreate) -> Created:
    """Create ``request`` for each recipient whose preferences allow it, exactly once.

    Concurrent creates of this instance commit together in one transaction (group
    commit, ``hub.writer``); this returns once the batch holding ``request`` committed
    and its events were handed to the broker.
    """
    return await writer(svc).submit(request)


def writer(svc: Services) -> GroupCommit[NotificationCreate, Created]:
    """The group-commit writer of ``svc``'s notification creates (made on first use)."""
    return svc.writer("notifications", lambda: GroupCommit(
        partial(_commit, svc),
        after=partial(_publish, svc),
        transient=(DatabaseUnavailable,),
        weight=lambda request: len(request.recipients()),
        key=lambda request: request.idempotency_key,
        max_weight=BATCH_RECIPIENTS,
    ))


async def _commit(
    svc: Services, requests: list[NotificationCreate]
) -> list[Created | BaseException]:
    """One transaction for a batch of creates."""
    async with svc.pool.acquire() as conn, conn.transaction():
        results = await create_many_in(
            conn, requests, channels=svc.delivery_channels,
            quiet_bypass_high=svc.settings.quiet_hours_bypass_high,
            escalate=_escalation(svc),
            expiry_days=svc.settings.retention_days,
            digest_at=_digest_clock(svc),
        )
    if svc.delivery_channels:
        svc.deliveries_due.set()  # after the commit: the workers see the new rows
    svc.metrics.write_batches.inc()
    svc.metrics.write_batch_jobs.inc(len(requests))
    fresh = [r for r in results if isinstance(r, Created) and not r.replayed]
    svc.metrics.notifications_created.inc(sum(len(c.items) for c in fresh))
    svc.metrics.notifications_suppressed.inc(sum(len(c.suppressed) for c in fresh))
    return list(results)


async def _publish(svc: Services, results: list[Created | BaseException]) -> None:
    """After a batch committed: its events to the broker, in one round trip."""
    await svc.publish([e for r in results if isinstance(r, Created) for e in r.events])


async def create_many_in(
    conn: Connection, requests: list[NotificationCreate], *, channels: tuple[str, ...] = (),
    quiet_bypass_high: bool = True, escalate: tuple[frozenset[str], float] = (frozenset(), 0.0),
    expiry_days: int | None = None, digest_at: tuple[int, int] = (8, 1),
) -> list[Created | HubError]:
    """Create ``requests`` inside the caller's transaction with set-based statements.

    One result per request, in order: what it created, or why it was refused (an
    unknown template, a missing template variable). Idempotency keys must be distinct;
    a key used before replays what its first request created. The caller publishes
    the events of every ``Created``.

    Each new notification's deliveries on ``channels`` (the configured delivery
    channels) that its user's preferences enable are scheduled in the same transaction
    (one statement; ``db.deliveries.decide`` keeps those the user has an address for),
    after the requests' inline contacts are stored (docs/delivery.md). Email, push and
    SMS deliveries inside the user's quiet hours are held until they end, unless the
    notification is ``high`` priority and ``quiet_bypass_high``. ``escalate``: (types,
    seconds): those types' email, push and SMS deliveries are due that much later.
    ``expiry_days``: a request whose ``expires_at`` is further ahead is refused (the
    retention horizon, docs/api.md). The email of a user whose preferences ask for a
    digest waits for it instead (``digest_at``: the hour daily and weekly digests go
    out, and the ISO weekday of weekly ones; docs/delivery.md, "Digests").

    Lock order: reads first (templates, preferences: no locks), then the idempotency
    claims in sorted key order, the inline contacts in sorted user order, then every
    recipient's counter in sorted order
    (``event_log.append``): the order every create takes, so concurrent batches (and
    other instances') queue up rather than deadlock.
    """
    contents, stored = await _contents(conn, requests)
    if expiry_days is not None and any(r.expires_at is not None for r in requests):
        contents = _check_expiry(requests, contents, expiry_days)
    recipients = [r.recipients() for r in requests]
    contents, localized = await _localize(conn, requests, recipients, contents, stored)
    prefs = await preferences.load_many(conn, sorted({u for rs in recipients for u in rs}))
    results: list[Created | HubError | None] = [None] * len(requests)
    plans: list[tuple[int, list[str], list[str], Content]] = []
    replays: list[int] = []  # refused content with a key: a replay if the key was used
    for n, request in enumerate(requests):
        content = contents[n]
        if not isinstance(content, HubError):
            allowed, suppressed = preferences.split(prefs, recipients[n], request.type)
            plans.append((n, allowed, suppressed, content))
        elif request.idempotency_key is None:
            results[n] = content
        else:
            replays.append(n)
    ids = iter(await store.allocate_ids(conn, sum(len(p[1]) for p in plans)))
    planned = [(n, [next(ids) for _ in allowed], allowed, suppressed, content)
               for n, allowed, suppressed, content in plans]
    claimed = await store.claim_requests(conn, [
        (key, own, suppressed) for n, own, _, suppressed, _ in planned
        if (key := requests[n].idempotency_key) is not None
    ])
    rows: list[store.Row] = []
    fresh: list[tuple[int, int, list[str]]] = []  # (request, rows, suppressed)
    for n, own, allowed, suppressed, content in planned:
        request = requests[n]
        if request.idempotency_key is not None and request.idempotency_key not in claimed:
            replays.append(n)
            continue
        variants = localized[n]
        rows.extend(
            (i, u, request.type, *variants.get(u, content), request.data, request.priority,
             request.expires_at)
            for i, u in zip(own, allowed, strict=True)
        )
        fresh.append((n, len(own), suppressed))
    await contact_store.merge_many(conn, {
        requests[n].recipients()[0]: contact.model_dump(exclude_none=True)
        for n, _, _ in fresh if (contact := requests[n].contact) is not None
    })
    items = await store.insert_rows(conn, rows)
    if channels:
        hour, weekday = digest_at
        await delivery_store.decide(
            conn, _candidates(items, prefs, channels, quiet_bypass_high, escalate),
            digest_hour=hour, digest_weekday=weekday,
        )
    events = await event_log.append(
        conn, [(i["user_id"], "notification.created", i) for i in items]
    )
    at = 0
    for n, count, suppressed in fresh:
        results[n] = Created(items[at:at + count], suppressed, events=events[at:at + count])
        at += count
    if replays:
        await _replay(conn, requests, sorted(replays), contents, results)
    return [r for r in results if r is not None]


def _check_expiry(
    requests: list[NotificationCreate], contents: list[Content | HubError], days: int
) -> list[Content | HubError]:
    """``contents``, with a request whose ``expires_at`` is more than ``days`` ahead
    refused instead."""
    horizon = datetime.now(UTC) + timedelta(days=days)
    return [
        InvalidInput("expires_at is too far ahead", errors=[{
            "loc": ["expires_at"],
            "msg": f"must be within {days} days (the retention horizon, HUB_RETENTION_DAYS)",
        }]) if r.expires_at is not None and r.expires_at > horizon else c
        for r, c in zip(requests, contents, strict=True)
    ]


def _candidates(
    items: list[dict[str, Any]], prefs: dict[str, Preferences], channels: tuple[str, ...],
    quiet_bypass_high: bool = True,
    escalate: tuple[frozenset[str], float] = (frozenset(), 0.0),
) -> list[delivery_store.Candidate]:
    """``(notification, user, channel, quiet hours..., delay, digest)`` for each channel
    the user's preferences enable. On the channels that reach a person
    (``QUIET_HELD``): the quiet hours (not for a ``high`` notification when
    ``quiet_bypass_high``), and the escalation delay for the types in ``escalate``. An
    email of a user with a digest waits for it, whatever its priority or type: no
    delay, and the quiet hours apply to the digest itself."""
    out: list[delivery_store.Candidate] = []
    escalate_types, escalate_after = escalate
    for item in items:
        saved = prefs.get(item["user_id"], _DEFAULT_PREFS)
        quiet = saved.quiet_hours
        if quiet is not None and quiet_bypass_high and item["priority"] == "high":
            quiet = None
        delay = escalate_after if item["type"] in escalate_types else 0.0
        for channel in channels:
            if not saved.allows(item["type"], channel):
                continue
            if channel == "email" and saved.digest != "off":
                q = saved.quiet_hours
                window = (None, None, None) if q is None else (q.start, q.end, q.timezone)
                out.append((item["id"], item["user_id"], channel, *window, 0.0, saved.digest))
            elif channel not in QUIET_HELD:
                out.append((item["id"], item["user_id"], channel, None, None, None, 0.0, None))
            elif quiet is not None:
                out.append((item["id"], item["user_id"], channel,
                            quiet.start, quiet.end, quiet.timezone, delay, None))
            else:
                out.append((item["id"], item["user_id"], channel, None, None, None, delay,
                            None))
    return out


def _escalation(svc: Services) -> tuple[frozenset[str], float]:
    s = svc.settings
    return frozenset(s.escalate_types), s.escalate_after_seconds


def _digest_clock(svc: Services) -> tuple[int, int]:
    """``(HUB_DIGEST_HOUR, HUB_DIGEST_WEEKDAY as an ISO weekday)``."""
    s = svc.settings
    return s.digest_hour, WEEKDAYS.index(s.digest_weekday) + 1


async def _replay(
    conn: Connection,
    requests: list[NotificationCreate],
    replays: list[int],
    contents: list[Content | HubError],
    results: list[Created | HubError | None],
) -> None:
    """Fill ``results`` of requests whose key was used before with what that one made."""
    stored = await store.get_requests(conn, [requests[n].idempotency_key or "" for n in replays])
    rows = {r["id"]: r for r in await store.by_ids(conn, [i for ids, _ in stored.values()
                                                              for i in ids])}
    for n in replays:
        found = stored.get(requests[n].idempotency_key or "")
        content = contents[n]
        if found is not None:
            ids, suppressed = found
            results[n] = Created([rows[i] for i in ids if i in rows], suppressed, replayed=True)
        elif isinstance(content, HubError):  # never used: the request itself is refused
            results[n] = content
        else:  # claimed by a transaction that rolled back meanwhile
            results[n] = Conflict("a request with this idempotency key just failed; try again")


async def _contents(
    conn: Connection, requests: list[NotificationCreate]
) -> tuple[list[Content | HubError], dict[str, dict[str, Any]]]:
    """Title, body and link of each request (explicit fields win over its template),
    and the stored templates they name."""
    names = sorted({r.template for r in requests if r.template is not None})
    stored = await templates.load_many(conn, names) if names else {}
    out: list[Content | HubError] = []
    for request in requests:
        try:
            out.append(_content(request, stored))
        except HubError as exc:
            out.append(exc)
    return out, stored


async def _localize(
    conn: Connection, requests: list[NotificationCreate], recipients: list[list[str]],
    contents: list[Content | HubError], stored: dict[str, dict[str, Any]],
) -> tuple[list[Content | HubError], list[dict[str, Content]]]:
    """Per request, the content of each recipient whose locale picks one of its
    template's locale variants (docs/api.md, "Localized templates"); the others get
    the request's own content. The locales are the recipients' contacts' (the request's
    inline contact first), read in one query, and only when a template has variants. A
    variant that does not render refuses its request, as the template's own text would.
    """
    localized: list[dict[str, Content]] = [{} for _ in requests]
    wanted = [
        n for n, r in enumerate(requests)
        if r.template is not None and not isinstance(contents[n], HubError)
        and stored.get(r.template, {}).get("locales")
    ]
    if not wanted:
        return contents, localized
    locales = await contact_store.locales(conn, sorted({u for n in wanted for u in recipients[n]}))
    contents = list(contents)
    for n in wanted:
        request = requests[n]
        assert request.template is not None
        variants = stored[request.template]["locales"]
        inline = request.contact.locale if request.contact is not None else None
        rendered: dict[str, Content] = {}
        try:
            for user in recipients[n]:
                locale = inline if inline and user == recipients[n][0] else locales.get(user)
                tag = templates.pick_locale(variants, locale)
                if tag is None:
                    continue
                if tag not in rendered:
                    rendered[tag] = _content(request, stored, variant=tag)
                localized[n][user] = rendered[tag]
        except HubError as exc:
            contents[n], localized[n] = exc, {}
    return contents, localized


def _content(
    request: NotificationCreate, stored: dict[str, dict[str, Any]], variant: str | None = None
) -> Content:
    """``request``'s content, from its template's ``variant`` locale if given."""
    if request.template is None:
        assert request.title is not None
        return request.title, request.body or "", request.link
    tpl = stored.get(request.template)
    if tpl is None:
        raise InvalidInput(
            f"unknown template {request.template!r}",
            errors=[{"loc": ["template"], "msg": "unknown template"}],
        )
    if variant is not None:
        text = tpl["locales"][variant]
        tpl = {**tpl, "title": text["title"], "body": text["body"],
               "link": text.get("link") or tpl["link"]}
    title = request.title or templates.render(tpl["title"], request.data)[:200]
    body = request.body if request.body is not None else templates.render(tpl["body"], request.data)
    link = request.link
    if link is None and tpl["link"]:
        link = templates.render(tpl["link"], request.data)
        if not safe_link(link):
            raise InvalidInput(
                "the template's link renders to something that is not an http(s) URL or "
                "a path on this site",
                errors=[{"loc": ["data"], "msg": "renders an unsafe link"}],
            )
    return title, body[:2000], link[:2000] if link else link


async def page(
    svc: Services,
    user_id: str,
    *,
    limit: int = 20,
    before: int | None = None,
    unread_only: bool = False,
    type_: str | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    """One page of ``user_id``'s inbox, newest first, with the unread count."""
    async with svc.pool.acquire() as conn:
        items, next_before = await store.page(
            conn, user_id, before=before, unread_only=unread_only, type_=type_,
            query=query, limit=limit,
        )
        unread = await store.unread_count(conn, user_id)
    return {"items": items, "next_before": next_before, "unread_count": unread}


async def unread_count(svc: Services, user_id: str) -> int:
    """How many of ``user_id``'s notifications are unread."""
    return await store.unread_count(svc.pool, user_id)


async def mark_read(svc: Services, user_id: str, ids: list[int]) -> dict[str, int]:
    """Mark ``ids`` read (others' ids are ignored); emits ``notifications.read``.

    In the same transaction, with web push on, their pushes not sent yet are skipped
    and those sent are dismissed on the user's devices (``db.deliveries.dismiss``;
    docs/delivery.md, "Cross-device dismissal"); so for ``mark_all_read``."""
    return await _mark(svc, user_id, ids=ids, upto=None)


async def mark_all_read(svc: Services, user_id: str, upto: int | None) -> dict[str, int]:
    """Mark all unread (ids <= ``upto`` when given) read; emits ``notifications.read``."""
    return await _mark(svc, user_id, ids=None, upto=upto)


async def _mark(
    svc: Services, user_id: str, *, ids: list[int] | None, upto: int | None
) -> dict[str, int]:
    dismissals = 0
    async with svc.write() as work:
        if ids is None:
            changed = await store.mark_all_read(work.conn, user_id, upto)
        else:
            changed = await store.mark_read(work.conn, user_id, ids)
        if changed and "push" in svc.delivery_channels:
            # Cross-device dismissal: one statement, whatever the number read.
            _, dismissals = await delivery_store.dismiss(work.conn, changed)
        unread = await store.unread_count(work.conn, user_id)
        if changed:
            data = {"ids": changed, "all": ids is None, "unread_count": unread}
            await work.append([(user_id, "notifications.read", data)])
    if dismissals:
        svc.deliveries_due.set()  # after the commit: the workers see the new rows
    return {"updated": len(changed), "unread_count": unread}


async def forget_message(
    conn: Connection, user_id: str, message_id: int
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
    async with svc.write() as work:
        if not await store.delete(work.conn, user_id, id_):
            raise NotFound("no such notification")
        unread = await store.unread_count(work.conn, user_id)
        await work.append(
            [(user_id, "notification.deleted", {"id": id_, "unread_count": unread})]
        )
