"""Notification operations: create (templates, preferences, idempotency), read, delete.

Every change is recorded in the user's event log in the same transaction and handed
to the broker after commit (docs/live.md): creates through the group commit
(``writer``), the rest through a unit of work (``Services.write``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from db import contacts as contact_store
from db import deliveries as delivery_store
from db import events as event_log
from db import notifications as store
from db import scheduled as scheduled_store
from db.errors import ClaimTaken, DatabaseUnavailable
from db.pool import Connection
from hub import contacts, preferences, templates
from hub.errors import Conflict, HubError, InvalidInput, NotFound
from hub.models import NotificationCreate, Preferences, stored_actions
from hub.services import Change, Event, Services
from hub.settings import WEEKDAYS
from hub.writer import GroupCommit, after_write

R = TypeVar("R")

#: A batch closes once its creates reach this many recipients, so a burst of large
#: fan-outs does not hold every recipient's counter lock for long.
BATCH_RECIPIENTS = 2000
#: The preferences of a user who never saved any.
_DEFAULT_PREFS = Preferences()
#: The delivery channels quiet hours hold and escalation delays (people's devices; a
#: webhook is a machine).
QUIET_HELD = frozenset({"email", "push", "sms"})


#: A ``send_at`` no further ahead than this is now: the notification is created at once.
NOW_SECONDS = 1.0


@dataclass
class Created:
    """What a create call made; ``replayed`` when an idempotency key was seen before.

    ``scheduled``: the request had a later ``send_at``; what was stored to be sent then
    (``items`` and ``suppressed`` are empty).
    """

    items: list[dict[str, Any]]
    suppressed: list[str]
    replayed: bool = False
    events: list[Event] = field(default_factory=list, repr=False)
    scheduled: dict[str, Any] | None = None
    #: It joined a group (``collapse_key``) rather than make a notification: an open
    #: one, or one an earlier create of its batch started (docs/api.md, "Grouping").
    grouped: bool = False


@dataclass(frozen=True, slots=True)
class Due:
    """A scheduled notification whose ``send_at`` has come (``hub.scheduled``).

    It is created by the group commit like any request, in the transaction that deletes
    its row (``db.scheduled.take``): a crash before the commit leaves the row, and a row
    already taken (by another instance, or cancelled) creates nothing.
    """

    id: int
    #: Its rendered content and recipients; no template, ``send_at``, contact or key.
    request: NotificationCreate
    #: The scheduling create's idempotency key: pointed at what is created now.
    key: str | None = None
    #: The recipients whose locale picked a template variant when it was scheduled,
    #: with that content (``templates.localize``).
    localized: dict[str, templates.Content] = field(default_factory=dict)
    #: The grouped title and body patterns rendered when it was scheduled (with a
    #: ``collapse_key``; ``hub.templates.grouped``).
    grouped: tuple[str, str | None] | None = None
    #: Those of the recipients in ``localized``, from their template variant.
    localized_grouped: dict[str, templates.Patterns] = field(default_factory=dict)


#: What the notification writer commits: a create, or a scheduled one now due.
Job = NotificationCreate | Due


async def create(svc: Services, request: NotificationCreate) -> Created:
    """Create ``request`` for each recipient whose preferences allow it, exactly once;
    or, with a ``send_at`` later than ``NOW_SECONDS`` from now, store it to be created
    then (``Created.scheduled``).

    Concurrent creates of this instance commit together in one transaction (group
    commit, ``hub.writer``); this returns once the batch holding ``request`` committed,
    as its events are being published.
    """
    return await writer(svc).submit(request)


def writer(svc: Services) -> GroupCommit[Job, Created]:
    """The group-commit writer of ``svc``'s notification creates (made on first use)."""
    return svc.writer("notifications", lambda: GroupCommit(
        partial(_commit, svc),
        after=partial(_publish, svc),
        transient=(DatabaseUnavailable,),
        weight=lambda job: len(_request(job).recipients()),
        key=lambda job: job.idempotency_key if isinstance(job, NotificationCreate) else None,
        max_weight=BATCH_RECIPIENTS,
    ))


def _request(job: Job) -> NotificationCreate:
    return job.request if isinstance(job, Due) else job


class Transactional(Exception):
    """A batch made without a transaction of its own needs one after all (it wrote
    nothing): make it again in one."""


async def written_alone_or_in_transaction(
    conn: Connection, alone: Callable[[], Awaitable[R]] | None,
    in_transaction: Callable[[], Awaitable[R]],
) -> R:
    """``alone()`` on ``conn`` without a transaction (None: the batch needs one); should it
    need one after all, having written nothing (``ClaimTaken``, ``Transactional``),
    ``in_transaction()`` in one. The group commits of creates and of direct messages."""
    if alone is not None:
        with contextlib.suppress(ClaimTaken, Transactional):
            return await alone()
    async with conn.transaction():
        return await in_transaction()


def _one_write(jobs: Sequence[Job]) -> bool:
    """Whether a batch's only write can be the statement that stores its rows, claims
    their keys, logs their events and decides their deliveries: plain creates, none
    with a collapse key (a group to join), an inline contact (stored first) or
    ``send_at``, and no scheduled create being sent."""
    return all(
        isinstance(job, NotificationCreate) and job.collapse_key is None
        and job.contact is None and job.send_at is None
        for job in jobs
    )


async def _commit(svc: Services, jobs: list[Job]) -> list[Created | BaseException]:
    """One transaction for a batch of creates; none of its own when its only write is
    one statement (``_one_write``), which is atomic alone: then the batch reads (ids,
    preferences, templates) and writes in two round trips, without BEGIN and COMMIT.
    Should that statement find an idempotency key used before (a replay), or have no
    rows to claim keys with, it writes nothing, and the batch is made again in a
    transaction."""
    zones = await contacts.zones(svc) if any(
        (contact := _request(job).contact) is not None and contact.time_zone is not None
        for job in jobs
    ) else None
    create = partial(
        create_many_in, jobs=jobs, channels=svc.delivery_channels, zones=zones,
        quiet_bypass_high=svc.settings.quiet_hours_bypass_high,
        escalate=_escalation(svc),
        expiry_days=svc.settings.retention_days,
        digest_at=_digest_clock(svc),
    )
    async with svc.pool.acquire() as conn:
        results = await written_alone_or_in_transaction(
            conn, partial(create, conn, alone=True) if _one_write(jobs) else None,
            partial(create, conn))
    if svc.delivery_channels:
        svc.deliveries_due.set()  # after the commit: the workers see the new rows
    if any(isinstance(r, Created) and r.scheduled and not r.replayed for r in results):
        svc.schedule_changed.set()  # this instance's scheduler may have to wake sooner
    svc.metrics.write_batches.inc()
    svc.metrics.write_batch_jobs.inc(len(jobs))
    fresh = [r for r in results if isinstance(r, Created) and not r.replayed]
    svc.metrics.notifications_created.inc(sum(len(c.items) for c in fresh))
    svc.metrics.notifications_suppressed.inc(sum(len(c.suppressed) for c in fresh))
    return list(results)


async def _publish(svc: Services, results: list[Created | BaseException]) -> None:
    """After a batch committed: its events to the broker, in one round trip."""
    await svc.publish([e for r in results if isinstance(r, Created) for e in r.events])


async def create_many_in(
    conn: Connection, jobs: Sequence[Job], *, channels: tuple[str, ...] = (),
    quiet_bypass_high: bool = True, escalate: tuple[frozenset[str], float] = (frozenset(), 0.0),
    expiry_days: int | None = None, digest_at: tuple[int, int] = (8, 1),
    zones: frozenset[str] | None = None, alone: bool = False,
) -> list[Created | HubError]:
    """``create_logging_in`` with nothing else to log: the results alone.

    ``alone``: ``conn`` is in no transaction, and ``jobs`` pass ``_one_write``: the
    batch writes in one statement, which claims the keys too. It raises ``ClaimTaken``
    or ``Transactional``, having written nothing, when it needs a transaction after
    all (``_commit``).
    """
    _, results = await create_logging_in(
        conn, jobs, channels=channels, quiet_bypass_high=quiet_bypass_high,
        escalate=escalate, expiry_days=expiry_days, digest_at=digest_at, zones=zones,
        alone=alone,
    )
    return results


async def create_logging_in(
    conn: Connection, jobs: Sequence[Job], *, first: Sequence[Change] = (),
    channels: tuple[str, ...] = (), quiet_bypass_high: bool = True,
    escalate: tuple[frozenset[str], float] = (frozenset(), 0.0),
    expiry_days: int | None = None, digest_at: tuple[int, int] = (8, 1),
    zones: frozenset[str] | None = None, alone: bool = False,
    batch: store.Batch | None = None,
    checked: tuple[event_log.Cte, list[Any]] | None = None,
) -> tuple[list[Event], list[Created | HubError]]:
    """Create ``jobs`` inside the caller's transaction with set-based statements (with
    ``alone``, in none: see ``create_many_in``).

    One result per job, in order: what it created, or why it was refused (an unknown
    template, a missing template variable). Idempotency keys must be distinct; a key
    used before replays what its first request created. The caller publishes the events
    of every ``Created``.

    ``first``: other changes ``(user_id, type, data)`` of the transaction, logged before
    the notifications' events by the statement that appends theirs (no round trip of
    their own); returned as events, in order, beside the results.

    ``batch``: what ``read_for`` read for ``jobs`` (none ``Due``), so this reads
    nothing. ``checked``: with ``alone``, the caller's own writes, as CTEs that run
    first in the one statement, the last a check named ``checked`` that stops it with
    ``ClaimTaken`` (``db.notifications.insert_appending``); with ``first``, the write
    is all or nothing: a refused request raises ``Transactional`` before it.

    A request whose ``send_at`` is more than ``NOW_SECONDS`` ahead is rendered, claims
    its key and stores its contact as any other, and is stored in
    ``scheduled_notifications`` instead of being created (``Created.scheduled``): no
    preferences, deliveries or events yet. A ``Due`` job is created only if this
    transaction takes its row (``db.scheduled.take``; an expired one is dropped), and
    its key is pointed at what it created.

    Each new notification's deliveries on ``channels`` (the configured delivery
    channels) that its user's preferences enable are scheduled in the same transaction
    (``db.deliveries.decide`` keeps those the user has an address for; decided by the
    statement that appends the events, so no round trip of its own), after the requests'
    inline contacts are stored (docs/delivery.md). Email, push and
    SMS deliveries inside the user's quiet hours are held until they end, unless the
    notification is ``high`` priority and ``quiet_bypass_high``. ``escalate``: (types,
    seconds): those types' email, push and SMS deliveries are due that much later.
    ``expiry_days``: a request whose ``expires_at`` is further ahead (of its
    ``send_at``, or now) is refused (the retention horizon, docs/api.md). The email of a
    user whose preferences ask for a digest waits for it instead (``digest_at``: the hour
    daily and weekly digests go out, and the ISO weekday of weekly ones;
    docs/delivery.md, "Digests"). ``zones``: the time zone names PostgreSQL knows
    (``hub.contacts.zones``); a request whose inline contact names another is refused
    (None: not checked).

    Lock order: the scheduled rows of ``Due`` jobs in id order (``SKIP LOCKED``: never
    waited for), reads (templates, preferences: no locks), then the idempotency claims
    in sorted key order, the keys of ``Due`` jobs, the inline contacts in sorted user
    order, the users' digest jobs (sorted, ``db.deliveries.decide``), then every
    recipient's counter in sorted order (``event_log.append``): the
    order every create takes, so concurrent batches (and other instances') queue up
    rather than deadlock.
    """
    due = [job for job in jobs if isinstance(job, Due)]
    taken = await scheduled_store.take(conn, sorted(d.id for d in due)) if due else {}
    # A Due job whose row is gone (sent or cancelled elsewhere) or expired creates
    # nothing, and a row taken here is created once even if it is in the batch twice
    # (leased again after its lease ended while its first job waited in the queue).
    results: list[Created | HubError] = [Created([], []) for _ in jobs]
    live = [n for n, job in enumerate(jobs)
            if not isinstance(job, Due) or taken.pop(job.id, False)]
    logged, made = await _create_in(
        conn, [_request(jobs[n]) for n in live],
        {at: job.key for at, n in enumerate(live) if isinstance(job := jobs[n], Due)},
        {at: job.localized for at, n in enumerate(live) if isinstance(job := jobs[n], Due)},
        {at: job.grouped for at, n in enumerate(live)
         if isinstance(job := jobs[n], Due) and job.grouped is not None},
        {at: job.localized_grouped for at, n in enumerate(live)
         if isinstance(job := jobs[n], Due)},
        channels=channels, quiet_bypass_high=quiet_bypass_high, escalate=escalate,
        expiry_days=expiry_days, digest_at=digest_at, zones=zones, first=first,
        alone=alone, batch=batch, checked=checked,
    )
    for n, result in zip(live, made, strict=True):
        results[n] = result
    return logged, results


async def _create_in(
    conn: Connection, requests: list[NotificationCreate], due: dict[int, str | None],
    localized_due: dict[int, dict[str, templates.Content]],
    due_grouped: dict[int, tuple[str, str | None]],
    due_localized_grouped: dict[int, dict[str, templates.Patterns]], *,
    channels: tuple[str, ...], quiet_bypass_high: bool,
    escalate: tuple[frozenset[str], float], expiry_days: int | None,
    digest_at: tuple[int, int], zones: frozenset[str] | None, first: Sequence[Change],
    alone: bool, batch: store.Batch | None, checked: tuple[event_log.Cte, list[Any]] | None,
) -> tuple[list[Event], list[Created | HubError]]:
    """``create_logging_in`` for ``requests``; ``due``: the key of each that is ``Due`` (by
    position), to point at what it creates, ``localized_due`` its recipients' localized
    content, ``due_grouped`` its grouped patterns and ``due_localized_grouped`` those of
    its localized recipients. A ``Due`` one's ``expires_at`` was checked when it was
    scheduled."""
    assert not alone or (not due and _one_write(requests)), \
        "a batch written alone passes _one_write"
    assert checked is None or alone, "a check belongs to a batch written alone"
    later = _later(requests)
    recipients = [[] if later[n] else r.recipients() for n, r in enumerate(requests)]
    if batch is None:
        batch = await _read(conn, requests, later, recipients)
    ids, now, stored = iter(batch.ids), batch.now, batch.templates
    contents = templates.contents(requests, stored)
    contents = _check_grouped(requests, contents, stored, due_grouped)
    if zones is not None:
        contents = [_check_zone(r, c, zones) for r, c in zip(requests, contents, strict=True)]
    if expiry_days is not None and any(
        r.expires_at is not None and n not in due for n, r in enumerate(requests)
    ):
        bounded = _check_expiry(requests, contents, expiry_days)
        contents = [c if n in due else bounded[n] for n, c in enumerate(contents)]
    # Localized now for a scheduled one too: its row keeps what each recipient gets.
    contents, localized, localized_grouped = templates.localize(
        requests, [r.recipients() for r in requests], contents, stored, batch.locales
    )
    for n, preset in localized_due.items():
        localized[n] = preset
        localized_grouped[n] = due_localized_grouped[n]
    prefs = preferences.loaded(batch.prefs)
    results: list[Created | HubError | None] = [None] * len(requests)
    plans: list[tuple[int, list[str], list[str], templates.Content]] = []
    replays: list[int] = []  # refused content with a key: a replay if the key was used
    for n, request in enumerate(requests):
        content = contents[n]
        if not isinstance(content, HubError):
            allowed, suppressed = preferences.split(prefs, recipients[n], request.type)
            plans.append((n, allowed, suppressed, content))
        elif alone and first:
            raise Transactional("a refused request beside the caller's own changes")
        elif request.idempotency_key is None:
            results[n] = content
        else:
            replays.append(n)
    planned = [(n, [next(ids) for _ in (["later"] if later[n] else allowed)], allowed,
                suppressed, content)
               for n, allowed, suppressed, content in plans]
    claims = [(key, own, suppressed) for n, own, _, suppressed, _ in planned
              if (key := requests[n].idempotency_key) is not None]
    # Without a transaction (``alone``), the statement that stores the rows claims the
    # keys, and stops unless all were free (``ClaimTaken``); nothing may run after it,
    # so a refused request whose key may have been used before (a replay to read) needs
    # a transaction.
    if alone and replays:
        raise Transactional("a refused request's key to look up")
    claimed = ({key for key, _, _ in claims} if alone
               else await store.claim_requests(conn, claims))
    rows: list[store.Row] = []
    groups: list[store.Group | None] = []  # each row's, if it has a collapse key
    fresh: list[tuple[int, int, list[str]]] = []  # (request, rows, suppressed)
    scheduled: list[tuple[int, scheduled_store.Row]] = []
    for n, own, allowed, suppressed, content in planned:
        request = requests[n]
        if request.idempotency_key is not None and request.idempotency_key not in claimed:
            replays.append(n)
            continue
        if later[n]:
            assert request.send_at is not None
            patterns = (_patterns(request, stored, content[0], due_grouped.get(n))
                        if request.collapse_key else (None, None))
            scheduled.append((n, (
                own[0], request.send_at, request.recipients(), request.type, *content,
                request.data, request.priority, request.expires_at, request.idempotency_key,
                # Each localized recipient's text, then their grouped patterns if any.
                {user: [*content, *localized_grouped[n].get(user, ())]
                 for user, content in localized[n].items()},
                stored_actions(request.actions), request.collapse_key, request.actor,
                *patterns,
            )))
            continue
        variants = localized[n]
        actions = stored_actions(request.actions)
        for i, u in zip(own, allowed, strict=True):
            row_content = variants.get(u, content)
            rows.append((i, u, request.type, *row_content, request.data, request.priority,
                         request.expires_at, actions))
            groups.append(None if request.collapse_key is None else store.Group(
                request.collapse_key, 1, [request.actor] if request.actor else [],
                *_patterns(request, stored, row_content[0], due_grouped.get(n),
                           localized_grouped[n].get(u)),
            ))
        fresh.append((n, len(own), suppressed))
    await store.resolve_requests(conn, [
        (key, [row[0] for row in rows[at:at + count]], suppressed)
        for n, count, suppressed, at in _offsets(fresh) if (key := due.get(n)) is not None
    ])
    await contact_store.merge_many(conn, {
        requests[n].recipients()[0]: contact.model_dump(exclude_none=True)
        for n in [n for n, _, _ in fresh] + [n for n, _ in scheduled]
        if (contact := requests[n].contact) is not None
    })
    for (n, _), item in zip(
        scheduled, await scheduled_store.insert_rows(conn, [row for _, row in scheduled]),
        strict=True,
    ):
        results[n] = Created([], [], scheduled=item)
    # Without groups the rows are known before they are stored, and the statement that
    # appends their events stores them (and decides their deliveries): one round trip.
    plain = not any(groups)
    if plain:
        assert now is not None or not rows
        items = [store.inserted(row, now) for row in rows] if now is not None else []
        joined = [False] * len(rows)
    else:
        items, joined = await _insert_grouped(conn, rows, groups)
    new = [item for item, j in zip(items, joined, strict=True) if not j]
    hour, weekday = digest_at
    deciding = delivery_store.decide_args(
        _candidates(new, prefs, channels, quiet_bypass_high, escalate), now,
        digest_hour=hour, digest_weekday=weekday,
    ) if channels else None
    if deciding is not None and any(joined):
        # Joining a group locks counters before the events are appended (the counts the
        # events carry): decide first, so digest jobs are still locked before counters.
        await delivery_store.decide_with(conn, deciding)
        deciding = None
    changes, owner = await _group_events(conn, rows, items, joined)
    # The deliveries are decided by the statement that appends the events: no round trip
    # of their own.
    changes = [*first, *changes]
    if plain and (rows or checked):
        assert now is not None
        events = await store.insert_appending(conn, rows, now, changes, deciding,
                                              claims if alone else None, checked)
    elif alone and claims:
        raise Transactional("keys to claim and no rows to store them with")
    else:
        events = await event_log.append(conn, changes, deciding=deciding)
    # Without a transaction, the rows are stored now: an error from here on must not
    # make the batch again (``Written``).
    with after_write(alone):
        logged, events = events[:len(first)], events[len(first):]
        mine: dict[int, list[Event]] = {}  # each event goes to the first row that made it
        for row, event in zip(owner, events, strict=True):
            mine.setdefault(row, []).append(event)
        if any(joined):  # a key whose request joined a group names the group
            await store.resolve_requests(conn, [
                (key, [item["id"] for item in items[at:at + count]], suppressed)
                for n, count, suppressed, at in _offsets(fresh)
                if (key := requests[n].idempotency_key or due.get(n)) is not None
                and any(joined[at:at + count])
            ])
        for n, count, suppressed, at in _offsets(fresh):
            results[n] = Created(
                items[at:at + count], suppressed,
                events=[e for r in range(at, at + count) for e in mine.get(r, [])],
                grouped=any(joined[at:at + count]),
            )
        if replays:
            await _replay(conn, requests, sorted(replays), contents, results)
        return logged, [r for r in results if r is not None]


def _later(requests: Sequence[NotificationCreate]) -> list[bool]:
    """Which of ``requests`` are scheduled (``send_at`` beyond ``NOW_SECONDS``)."""
    horizon = datetime.now(UTC) + timedelta(seconds=NOW_SECONDS)
    return [r.send_at is not None and r.send_at > horizon for r in requests]


async def read_for(
    conn: Connection, requests: list[NotificationCreate], *, messages: int = 0,
) -> store.Batch:
    """What creating ``requests`` reads (``create_logging_in``'s ``batch``), with
    ``messages`` new direct-message ids: one round trip."""
    later = _later(requests)
    recipients = [[] if later[n] else r.recipients() for n, r in enumerate(requests)]
    return await _read(conn, requests, later, recipients, messages)


async def _read(
    conn: Connection, requests: list[NotificationCreate], later: list[bool],
    recipients: list[list[str]], messages: int = 0,
) -> store.Batch:
    """One round trip: ids for every recipient (each request's ``recipients``, none when
    it is ``later``: those the preferences suppress, and requests refused, leave gaps; a
    scheduled request takes one id, its own), the time, the preferences, the templates
    and, for their variants, the locales."""
    return await store.read_batch(
        conn, sum(1 if later[n] else len(recipients[n]) for n in range(len(requests))),
        sorted({u for rs in recipients for u in rs}), templates.named(requests),
        sorted({u for r in requests if r.template is not None for u in r.recipients()}),
        messages=messages,
    )


def _check_zone(
    request: NotificationCreate, content: templates.Content | HubError, zones: frozenset[str],
) -> templates.Content | HubError:
    """``content``, or the refusal of an inline contact's time zone PostgreSQL does not
    know (docs/delivery.md, "Recipients' addresses")."""
    zone = request.contact.time_zone if request.contact is not None else None
    error = contacts.zone_error(zone, zones, ["contact", "time_zone"])
    return content if error is None or isinstance(content, HubError) else error


def _check_grouped(
    requests: list[NotificationCreate], contents: list[templates.Content | HubError],
    stored: dict[str, dict[str, Any]], due_grouped: dict[int, tuple[str, str | None]],
) -> list[templates.Content | HubError]:
    """``contents``, with a request whose grouped template does not render (a missing
    variable) refused before anything is claimed."""
    out = list(contents)
    for n, request in enumerate(requests):
        content = out[n]
        if request.collapse_key is None or isinstance(content, HubError) or n in due_grouped:
            continue
        try:
            templates.grouped(request, stored, content[0])
        except HubError as exc:
            out[n] = exc
    return out


def _patterns(
    request: NotificationCreate, stored: dict[str, dict[str, Any]], title: str,
    scheduled: tuple[str, str | None] | None, localized: templates.Patterns | None = None,
) -> tuple[str, str | None]:
    """The grouped title and body patterns of a row titled ``title`` (checked by
    ``_check_grouped``): its recipient's ``localized`` ones (``templates.localize``), else
    those stored when it was scheduled, else its template's."""
    if localized is not None:
        return localized
    return scheduled if scheduled is not None else templates.grouped(request, stored, title)


async def _insert_grouped(
    conn: Connection, rows: list[store.Row], groups: list[store.Group | None],
) -> tuple[list[dict[str, Any]], list[bool]]:
    """Insert ``rows`` whose ``groups`` have collapse keys (``db.notifications.
    insert_grouped``): a batch's rows of one user and key fold into one (the first's id,
    the newest's content, the count and actors of all), which starts a group or joins
    the open one. Returns each row's notification, and whether the row joined a group
    (an open one before this batch, or an earlier row of it) rather than start one."""
    first: dict[tuple[str, str], int] = {}  # (user, key) -> the folded row, by position
    into: list[int] = []
    for r, (row, group) in enumerate(zip(rows, groups, strict=True)):
        if group is None:
            into.append(r)
            continue
        into.append(first.setdefault((row[1], group.key), r))
    folded_rows: dict[int, store.Row] = {}
    folded: dict[int, store.Group] = {}
    for r, (row, group) in enumerate(zip(rows, groups, strict=True)):
        at = into[r]
        if group is None:
            folded_rows[r] = row
            continue
        before = folded.get(at)
        folded_rows[at] = (rows[at][0], *row[1:])  # the first's id, the newest's content
        folded[at] = group if before is None else store.Group(
            group.key, before.count + group.count,
            list(dict.fromkeys([*group.actors, *before.actors]))[:5],
            group.title, group.body,
        )
    order = sorted(folded_rows)
    stored = await store.insert_grouped(
        conn, [folded_rows[r] for r in order], [folded.get(r) for r in order]
    )
    by_row = dict(zip(order, stored, strict=True))
    items = [by_row[into[r]] for r in range(len(rows))]
    joined = [into[r] != r or by_row[r]["id"] != rows[r][0] for r in range(len(rows))]
    return items, joined


async def _group_events(
    conn: Connection, rows: list[store.Row], items: list[dict[str, Any]], joined: list[bool],
) -> tuple[list[tuple[str, str, dict[str, Any]]], list[int]]:
    """The events of a batch's ``items``: ``notification.created`` for each new one,
    then one ``notification.updated`` per group joined (``{"notification",
    "unread_count", "unseen_count"}``, the counts right after it); and the row each
    event belongs to. The inserted rows' ``was_seen``/``was_out`` are dropped."""
    changes: list[tuple[str, str, dict[str, Any]]] = []
    owner: list[int] = []
    updated: dict[int, tuple[int, dict[str, Any], tuple[int, int]]] = {}  # by id
    started = {rows[r][0] for r in range(len(rows)) if not joined[r]}  # new this batch
    for r, item in enumerate(items):
        was_seen, was_out = item.pop("was_seen", None), item.pop("was_out", None)
        if not joined[r]:
            changes.append((item["user_id"], "notification.created", item))
            owner.append(r)
        elif item["id"] not in updated and item["id"] not in started:
            # Back in the inbox (if it was out) and unseen (if it was seen or out).
            updated[item["id"]] = (r, item, (1 if was_out else 0,
                                             1 if was_out or was_seen else 0))
    if not updated:
        return changes, owner
    later = sorted(updated.values(), key=lambda u: u[1]["position"])
    counts = await store.counts_locked(conn, [item["user_id"] for _, item, _ in later])
    pending: dict[str, list[int]] = {}  # the deltas still to come, per user
    for _, item, (unread, unseen) in later:
        p = pending.setdefault(item["user_id"], [0, 0])
        p[0] += unread
        p[1] += unseen
    for r, item, (unread, unseen) in later:
        user = item["user_id"]
        p = pending[user]
        p[0] -= unread
        p[1] -= unseen
        total_unread, total_unseen = counts[user]
        changes.append((user, "notification.updated", {
            "notification": item, "unread_count": total_unread - p[0],
            "unseen_count": total_unseen - p[1],
        }))
        owner.append(r)
    return changes, owner


def _offsets(
    fresh: list[tuple[int, int, list[str]]],
) -> list[tuple[int, int, list[str], int]]:
    """Each ``(request, rows, suppressed)`` with where its rows start."""
    out, at = [], 0
    for n, count, suppressed in fresh:
        out.append((n, count, suppressed, at))
        at += count
    return out


def _check_expiry(
    requests: list[NotificationCreate], contents: list[templates.Content | HubError], days: int
) -> list[templates.Content | HubError]:
    """``contents``, with a request whose ``expires_at`` is more than ``days`` after it
    is sent (its ``send_at``, or now) refused instead."""
    now = datetime.now(UTC)
    return [
        InvalidInput("expires_at is too far ahead", errors=[{
            "loc": ["expires_at"],
            "msg": f"must be within {days} days of sending (the retention horizon, "
                   "HUB_RETENTION_DAYS)",
        }]) if r.expires_at is not None
        and r.expires_at > max(now, r.send_at or now) + timedelta(days=days) else c
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
    contents: list[templates.Content | HubError],
    results: list[Created | HubError | None],
) -> None:
    """Fill ``results`` of requests whose key was used before with what that one made."""
    stored = await store.get_requests(conn, [requests[n].idempotency_key or "" for n in replays])
    wanted = [i for ids, _ in stored.values() for i in ids]
    rows = {r["id"]: r for r in await store.by_ids(conn, wanted)}
    missing = [i for i in wanted if i not in rows]  # deleted, or a scheduled one waiting
    waiting = {r["id"]: r for r in await scheduled_store.by_ids(conn, missing)} if missing \
        else {}
    for n in replays:
        found = stored.get(requests[n].idempotency_key or "")
        content = contents[n]
        if found is not None:
            ids, suppressed = found
            items = [rows[i] for i in ids if i in rows]
            results[n] = Created(items, suppressed, replayed=True,
                                 scheduled=next((waiting[i] for i in ids if i in waiting), None),
                                 grouped=any(i["group_count"] > 1 for i in items))
        elif isinstance(content, HubError):  # never used: the request itself is refused
            results[n] = content
        else:  # claimed by a transaction that rolled back meanwhile
            results[n] = Conflict("a request with this idempotency key just failed; try again")


#: ``page`` keeping every notification of its box.
NO_FILTERS = store.Filters()


async def page(
    svc: Services,
    user_id: str,
    *,
    box: str = "inbox",
    limit: int = 20,
    before: int | None = None,
    filters: store.Filters = NO_FILTERS,
) -> dict[str, Any]:
    """One page of ``user_id``'s ``box`` (docs/api.md, "The inbox"), newest first, with
    the inbox's unread and unseen counts."""
    async with svc.pool.acquire() as conn:
        items, next_before = await store.page(
            conn, user_id, box=box, before=before, filters=filters, limit=limit,
        )
        unread, unseen = await store.counts(conn, user_id)
    return {"items": items, "next_before": next_before, "unread_count": unread,
            "unseen_count": unseen}


async def counts(svc: Services, user_id: str) -> dict[str, int]:
    """``{"count", "unseen"}``: how many of ``user_id``'s notifications in the inbox are
    unread, and how many of those unseen."""
    unread, unseen = await store.counts(svc.pool, user_id)
    return {"count": unread, "unseen": unseen}


async def mark_read(svc: Services, user_id: str, ids: list[int]) -> dict[str, int]:
    """Mark ``ids`` read, and seen (others' ids are ignored); emits ``notifications.read``.

    In the same transaction, with web push on, their pushes not sent yet are skipped
    and those sent are dismissed on the user's devices (``db.deliveries.dismiss``;
    docs/delivery.md, "Cross-device dismissal"); so for ``mark_all_read``."""
    return await _mark(svc, user_id, ids=ids, upto=None)


async def mark_all_read(svc: Services, user_id: str, upto: int | None) -> dict[str, int]:
    """Mark the inbox's unread notifications (those with position <= ``upto`` when given)
    read; emits ``notifications.read``."""
    return await _mark(svc, user_id, ids=None, upto=upto)


async def dismiss_read(svc: Services, conn: Connection, ids: list[int]) -> int:
    """With web push on, the cross-device dismissal of notifications ``ids``, just read,
    inside the caller's transaction (one statement, whatever the number read); the
    dismissals scheduled: if any, set ``svc.deliveries_due`` after the commit."""
    if not ids or "push" not in svc.delivery_channels:
        return 0
    _, dismissals = await delivery_store.dismiss(conn, ids)
    return dismissals


async def decide_again(svc: Services, conn: Connection, items: list[dict[str, Any]]) -> bool:
    """Inside the caller's transaction, decide the deliveries of ``items`` (stored
    notifications back in the inbox as new: a snooze's return) again, as a create does,
    under their users' preferences, contacts and quiet hours at this moment. Their
    finished deliveries make room for the new ones; one still being sent stands for its
    channel. True when this hub has delivery channels: then set ``svc.deliveries_due``
    after the commit."""
    if not svc.delivery_channels:
        return False
    if not items:
        return True
    await delivery_store.forget_finished(conn, [item["id"] for item in items])
    prefs = await preferences.load_many(conn, sorted({item["user_id"] for item in items}))
    hour, weekday = _digest_clock(svc)
    await delivery_store.decide(
        conn, _candidates(items, prefs, svc.delivery_channels,
                          svc.settings.quiet_hours_bypass_high, _escalation(svc)),
        digest_hour=hour, digest_weekday=weekday,
    )
    return True


async def _mark(
    svc: Services, user_id: str, *, ids: list[int] | None, upto: int | None
) -> dict[str, int]:
    async with svc.write() as work:
        if ids is None:
            changed = await store.mark_all_read(work.conn, user_id, upto)
        else:
            changed = await store.mark_read(work.conn, user_id, ids)
        dismissals = await dismiss_read(svc, work.conn, changed)
        unread, unseen = (await store.counts_locked(work.conn, [user_id]))[user_id]
        if changed:
            data = {"ids": changed, "all": ids is None, "unread_count": unread,
                    "unseen_count": unseen}
            await work.append([(user_id, "notifications.read", data)])
    if dismissals:
        svc.deliveries_due.set()  # after the commit: the workers see the new rows
    return {"updated": len(changed), "unread_count": unread, "unseen_count": unseen}


async def forget_message(
    conn: Connection, user_id: str, message_id: int, also: list[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """Inside the caller's transaction, delete ``user_id``'s notifications quoting a
    direct message that was removed for everyone; returns the events to append.

    ``also``: the other users the caller appends events for. Once the rows are deleted,
    the counters of all of them are locked in sorted order (the hub's lock order: rows,
    then counters) and ``user_id``'s counts read under that lock, so the counts the
    events carry are exact at their ``seq`` even while another write of ``user_id``
    commits meanwhile.
    """
    ids = await store.delete_for_message(conn, user_id, message_id)
    if not ids:
        return []
    unread, unseen = (await store.counts_locked(conn, [user_id, *also]))[user_id]
    return [(user_id, "notification.deleted",
             {"id": i, "unread_count": unread, "unseen_count": unseen}) for i in ids]


async def delete(svc: Services, user_id: str | None, id_: int) -> None:
    """Delete ``user_id``'s notification ``id_``; NotFound if it is not theirs.

    ``user_id`` None (an admin or API key): cancel ``id_`` if it is a scheduled
    notification, else delete notification ``id_`` whoever's it is; NotFound if neither
    exists (a scheduled one already sent has become notifications with ids of their own).
    """
    async with svc.write() as work:
        if user_id is None:
            if await scheduled_store.cancel(work.conn, id_):
                return
            user_id = await store.delete_any(work.conn, id_)
            if user_id is None:
                raise NotFound("no such notification")
        elif not await store.delete(work.conn, user_id, id_):
            raise NotFound("no such notification")
        unread, unseen = (await store.counts_locked(work.conn, [user_id]))[user_id]
        await work.append([(user_id, "notification.deleted",
                            {"id": id_, "unread_count": unread, "unseen_count": unseen})])


async def get(svc: Services, user_id: str | None, id_: int) -> dict[str, Any]:
    """Notification ``id_`` if it is ``user_id``'s; for ``user_id`` None (an admin or API
    key), whoever's it is, or the scheduled notification ``id_``. NotFound otherwise."""
    async with svc.pool.acquire() as conn:
        found = await store.get(conn, id_, user_id)
        if found is None and user_id is None:
            found = next(iter(await scheduled_store.by_ids(conn, [id_])), None)
    if found is None:
        raise NotFound("no such notification")
    return found
