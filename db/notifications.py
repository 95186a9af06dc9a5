"""Stored notifications and idempotent create requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from db import events as event_log
from db.errors import translating
from db.pool import Conn, Connection, dumps
from db.queries import load

Q = load("notifications")


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, with ``%``, ``_`` and ``\\`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


#: A notification to insert: ``(id, user_id, type, title, body, link, data, priority,
#: expires_at, actions)``, its id from ``read_batch``; ``actions`` None: it has none.
Row = tuple[int, str, str, str, str, str | None, dict[str, Any], str, datetime | None,
            list[dict[str, Any]] | None]


def item(record: Any) -> dict[str, Any]:
    """A stored notification as the API shows it: its choice (``action_id``,
    ``acted_at``) as ``action``, ``{"id", "acted_at"}`` or None."""
    row = dict(record)
    action_id, acted_at = row.pop("action_id"), row.pop("acted_at")
    row["action"] = None if action_id is None else {"id": action_id, "acted_at": acted_at}
    return row


def inserted(row: Row, created_at: datetime) -> dict[str, Any]:
    """``item`` of ``row`` as ``insert_appending`` stored it at ``created_at``, built without
    reading it back: the same keys in the same order, and equal values, but nested
    objects (``data``, ``actions``) keep the caller's key order where a read gives
    jsonb's (shorter keys first), and a ``-0.0`` stays one. A row's ``data`` is shared,
    not copied."""
    id_, user_id, type_, title, body, link, data, priority, expires_at, actions = row
    return {
        "id": id_, "user_id": user_id, "type": type_, "title": title, "body": body,
        "link": link, "data": data, "priority": priority, "read": False, "read_at": None,
        "seen": False, "seen_at": None, "archived": False, "archived_at": None,
        "snoozed_until": None, "position": id_, "created_at": created_at,
        "expires_at": None if expires_at is None else expires_at.astimezone(UTC),
        "actions": [] if actions is None else actions, "collapse_key": None,
        "group_count": 1, "actors": [], "action": None,
    }


@dataclass(frozen=True, slots=True)
class Group:
    """A row's grouping (``insert_grouped``): its collapse key, how many creates it folds,
    their actors (newest first, distinct, at most 5), and the grouped title and body
    patterns (``hub.templates.grouped``; body None: the newest create's body)."""

    key: str
    count: int
    actors: list[str]
    title: str
    body: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    """What a create batch reads before it builds its rows (``read_batch``)."""

    ids: list[int]  # new notification ids, ascending
    now: datetime | None  # the transaction's now(): every inserted row's created_at
    prefs: dict[str, dict[str, Any]]  # saved preferences documents, by user
    templates: dict[str, dict[str, Any]]  # the stored templates named, by key
    locales: dict[str, str]  # contact locales, by user (read only for variants)
    message_ids: list[int] = field(default_factory=list)  # new message ids, ascending


async def read_batch(
    conn: Conn, count: int, users: list[str], templates: list[str], locale_users: list[str],
    *, messages: int = 0,
) -> Batch:
    """``count`` new notification ids (gaps are harmless), the transaction's ``now()``,
    the saved preferences of ``users``, the stored ``templates`` and, when one of them
    has locale variants, the contact locales of ``locale_users``; and ``messages`` new
    direct-message ids (``db.messages.inserting``): one round trip, none when there is
    nothing to read."""
    if count == 0 and not users and not templates and not messages:
        return Batch([], None, {}, {}, {})
    row = await conn.fetchrow(Q.read_batch, count, users, templates, locale_users, messages)
    return Batch(list(row["ids"] or []), row["now"], row["prefs"] or {},
                 row["templates"] or {}, row["locales"] or {},
                 list(row["message_ids"] or []))


def _columns(rows: list[Row]) -> list[list[Any]]:
    """``rows`` as the column arrays of ``Q.insert_rows`` (and of ``Q.insert_grouped``)."""
    columns: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)]
    # As text: arrays of arrays must be rectangular.
    columns[9] = [None if actions is None else dumps(actions) for actions in columns[9]]
    return columns


async def insert_grouped(
    conn: Conn, rows: list[Row], groups: list[Group | None]
) -> list[dict[str, Any]]:
    """Insert ``rows``, some with a ``Group``, in one statement; return the stored rows,
    one per row given, in that order.

    A row with a ``Group`` (``groups``, by position; each user and key at most once)
    joins the user's open group with its key if there is one: the row returned is the
    group's (its own id), with ``was_seen`` and ``was_out`` (archived or snoozed) telling
    how it was before; a row inserted has them None. (Rows without groups are stored by
    ``insert_appending``.)
    """
    if not rows:
        return []
    columns = _columns(rows)
    gs = groups
    extra = [
        [g.key if g else None for g in gs], [g.count if g else 1 for g in gs],
        [dumps(g.actors if g else []) for g in gs], [g.title if g else None for g in gs],
        [g.body if g else None for g in gs],
    ]
    stored = [item(r) for r in await conn.fetch(Q.insert_grouped, *columns, *extra)]
    by_id = {r["id"]: r for r in stored}
    by_group = {(r["user_id"], r["collapse_key"]): r for r in stored if r["collapse_key"]}
    return [by_group[(row[1], g.key)] if g else by_id[row[0]]
            for row, g in zip(rows, gs, strict=True)]


#: The CTEs of ``insert_appending``, built once: the rows' insert; the claims and their
#: check; the rows' insert waiting for that check (a one-time filter), so the claims
#: come first, before the rows, the deliveries' digest jobs and the counters: the hub's
#: lock order.
_STORED: event_log.Cte = (f"stored AS ({Q.insert_rows}\nRETURNING id)", 11)
_CHECKED: event_log.Cte = (f"claimed AS ({Q.claim_requests}),\n{Q.claims_checked}", 3)
_STORED_CHECKED: event_log.Cte = (
    f"stored AS ({Q.insert_rows}\nWHERE (SELECT ok FROM checked)\nRETURNING id)", 11)


async def insert_appending(
    conn: Connection, rows: list[Row], created_at: datetime,
    events: list[tuple[str, str, dict[str, Any]]], deciding: list[Any] | None = None,
    claims: list[tuple[str, list[int], list[str]]] | None = None,
    checked: tuple[event_log.Cte, list[Any]] | None = None,
) -> list[tuple[str, int, str, dict[str, Any]]]:
    """The plain insert of ``rows`` (none at all is allowed) created at ``created_at``
    (``read_batch``'s now) and ``event_log.append`` of ``events`` (one at least;
    deciding the rows' deliveries, with ``deciding``) in one statement, one round trip;
    the rows are those ``inserted`` builds. Being one statement, it is atomic outside a
    transaction too.

    ``claims``: as ``claim_requests`` takes them, claimed by this statement, which
    raises ``ClaimTaken`` (and writes nothing) unless every key was free. ``checked``
    instead: other CTEs and their parameters that write first, the last named
    ``checked`` (as ``claims_checked``, which stops the statement with ``ClaimTaken``);
    the rows and the events wait for it (``db.messages.inserting``).
    """
    values = [*_columns(rows), created_at] if rows else [[]] * 10 + [created_at]
    if checked is None and not claims:
        return await event_log.append_after(conn, [(_STORED, values)], events,
                                            deciding=deciding)
    if checked is None:
        checked = (_CHECKED, _claim_columns(claims or []))
    else:
        assert not claims, "one check per statement"
    with translating():  # ClaimTaken, from the SQLSTATE the check stops it with
        return await event_log.append_after(
            conn, [checked, (_STORED_CHECKED, values)], events,
            deciding=deciding, reads=("checked",))


async def by_ids(conn: Conn, ids: list[int]) -> list[dict[str, Any]]:
    return [item(r) for r in await conn.fetch(Q.by_ids, ids)]


#: The boxes of ``page``: the inbox, the archive, or every notification (snoozed too).
BOXES = ("inbox", "archived", "all")


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``page`` keeps (None: no condition): read or unread, any of ``types`` or
    ``priorities``, created in ``[since, until)``, ``query`` in the title or body."""

    read: bool | None = None
    types: list[str] | None = None
    priorities: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    query: str | None = None


async def page(
    conn: Conn, user_id: str, *, box: str, before: int | None, filters: Filters, limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` notifications of ``box`` by position, newest first, and the cursor
    of the next page (the last one's position)."""
    f = filters
    pattern = like_pattern(f.query) if f.query else None
    rows = await conn.fetch(Q.page, user_id, box, before, f.read, f.types, f.priorities,
                            f.since, f.until, pattern, limit + 1)
    items = [item(r) for r in rows[:limit]]
    next_before = items[-1]["position"] if len(rows) > limit else None
    return items, next_before


async def counts(conn: Conn, user_id: str) -> tuple[int, int]:
    """``(unread, unseen)`` of ``user_id``'s inbox (not archived, snoozed or expired)."""
    row = await conn.fetchrow(Q.counts, user_id)
    assert row is not None
    return int(row["unread"]), int(row["unseen"])


async def mark_read(conn: Conn, user_id: str, ids: list[int]) -> list[int]:
    """Mark those of ``ids`` that are ``user_id``'s and unread; return the ids changed."""
    return sorted(r["id"] for r in await conn.fetch(Q.mark_read, user_id, ids))


async def mark_all_read(conn: Conn, user_id: str, upto: int | None) -> list[int]:
    """Mark every unread notification of the inbox (with position <= ``upto`` if given)
    read; return the ids."""
    return sorted(r["id"] for r in await conn.fetch(Q.mark_all_read, user_id, upto))


async def delete(conn: Conn, user_id: str, id_: int) -> bool:
    return await conn.fetchval(Q.delete, id_, user_id) is not None


async def delete_any(conn: Conn, id_: int) -> str | None:
    """Delete notification ``id_`` whoever's it is; its user, or None if there is none."""
    user: str | None = await conn.fetchval(Q.delete_any, id_)
    return user


async def get(conn: Conn, id_: int, user_id: str | None = None) -> dict[str, Any] | None:
    """Notification ``id_`` (only if it is ``user_id``'s, when given), or None."""
    row = await conn.fetchrow(Q.get, id_, user_id)
    return None if row is None else item(row)


async def for_action(conn: Conn, id_: int, user_id: str) -> dict[str, Any] | None:
    """Inside the caller's transaction, notification ``id_`` if it is ``user_id``'s,
    locked until the transaction ends, with ``expired``; None if there is none."""
    row = await conn.fetchrow(Q.for_action, id_, user_id)
    return None if row is None else item(row)


async def record_action(conn: Conn, id_: int, action_id: str) -> dict[str, Any]:
    """Inside the caller's transaction, record ``action_id`` as the choice on
    notification ``id_`` (locked by ``for_action``, without a choice yet), mark it read
    and queue the choice in ``action_outbox``; the updated notification."""
    row = await conn.fetchrow(Q.record_action, id_, action_id)
    assert row is not None, "for_action locked the row"
    return item(row)


async def expire(conn: Conn, limit: int) -> list[tuple[int, str]]:
    """Delete up to ``limit`` expired notifications (rows other transactions hold are
    left for later); ``(id, user_id)`` of each, in id order."""
    return sorted((r["id"], r["user_id"]) for r in await conn.fetch(Q.expire, limit))


async def counts_many(conn: Conn, user_ids: list[str]) -> dict[str, tuple[int, int]]:
    """The ``counts`` of each of ``user_ids``."""
    return {r["user_id"]: (int(r["unread"]), int(r["unseen"]))
            for r in await conn.fetch(Q.counts_many, user_ids)}


async def counts_locked(conn: Connection, user_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Inside a write's transaction: each user's ``(unread, unseen)``, read once their
    counters are locked, so the counts an event carries are exact at its ``seq``.

    A transaction that logged an event before this one has committed by then (and this
    read sees its change); one that logs after this one counts this change. Call it
    after the rows are changed (rows before counters, the hub's lock order).
    """
    users = sorted(set(user_ids))
    await event_log.lock(conn, users)
    return await counts_many(conn, users)


async def delete_for_message(conn: Conn, user_id: str, message_id: int) -> list[int]:
    """Delete ``user_id``'s ``new_message`` notifications about ``message_id``; their ids."""
    return [r["id"] for r in await conn.fetch(Q.delete_for_message, user_id, message_id)]


async def claim_requests(
    conn: Conn, claims: list[tuple[str, list[int], list[str]]]
) -> set[str]:
    """Claim each ``(key, notification ids, suppressed users)`` in this transaction,
    recording what its request creates; returns the keys that were free.

    A concurrent claim of the same key waits for this transaction and then finds it used.
    """
    if not claims:
        return set()
    rows = await conn.fetch(Q.claim_requests, *_claim_columns(claims))
    return {r["idempotency_key"] for r in rows}


def _claim_columns(claims: list[tuple[str, list[int], list[str]]]) -> list[list[Any]]:
    """``claims`` as the three arrays of ``Q.claim_requests``."""
    return [[key for key, _, _ in claims], [dumps(ids) for _, ids, _ in claims],
            [dumps(suppressed) for _, _, suppressed in claims]]


async def resolve_requests(
    conn: Conn, resolved: list[tuple[str, list[int], list[str]]]
) -> None:
    """Point each scheduled create's ``(key, notification ids, suppressed users)`` at
    what it created when it was sent."""
    if not resolved:
        return
    await conn.execute(
        Q.resolve_requests,
        [key for key, _, _ in resolved],
        [dumps(ids) for _, ids, _ in resolved],
        [dumps(suppressed) for _, _, suppressed in resolved],
    )


async def get_requests(conn: Conn, keys: list[str]) -> dict[str, tuple[list[int], list[str]]]:
    """What the requests with ``keys`` created: ``key -> (notification ids, suppressed)``."""
    rows = await conn.fetch(Q.get_requests, keys)
    return {
        r["idempotency_key"]: (list(r["notification_ids"]), list(r["suppressed"])) for r in rows
    }


async def prune(
    conn: Conn, retention_days: int, request_days: int, timeout: float | None = None
) -> int:
    """Delete read notifications older than ``retention_days``; return how many.

    ``timeout`` (seconds) replaces the pool's statement timeout for each statement.
    """
    status = await conn.execute(Q.prune_read, retention_days, timeout=timeout)
    await conn.execute(Q.prune_requests, request_days, timeout=timeout)
    return int(status.split()[-1])
