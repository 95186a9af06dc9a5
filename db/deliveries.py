"""Delivery jobs: one row per notification x channel (docs/delivery.md, "The model")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("deliveries")

#: A delivery candidate: ``(notification id, user id, channel, quiet start, quiet end,
#: quiet time zone, delay, digest)``; the quiet hours (``HH:MM``, an IANA zone) are None
#: when the delivery is never held; ``delay``: seconds before it is due (escalation; 0:
#: now); ``digest``: ``hourly``, ``daily`` or ``weekly`` for an email that waits for the
#: user's digest, else None.
Candidate = tuple[int, str, str, str | None, str | None, str | None, float, str | None]
_CONTACT = ("email", "phone", "locale", "time_zone")
_NOTIFICATION = ("id", "user_id", "type", "title", "body", "link", "data", "priority",
                 "read", "read_at", "created_at", "expires_at", "actions")


async def decide(conn: Conn, candidates: list[Candidate], at: datetime | None = None,
                 *, digest_hour: int = 8, digest_weekday: int = 1) -> None:
    """Insert the deliveries of ``candidates`` whose user has an address (one statement).

    A candidate is due ``delay`` seconds after ``at`` (None: the transaction's
    ``now()``). One whose quiet hours cover that moment on the wall clock of the
    user's zone (the contact's ``time_zone``, else the quiet hours' own) is stored
    ``held`` until the window's end (docs/delivery.md, "Quiet hours"); the others are
    ``scheduled`` at that moment. A candidate with a ``digest`` is stored ``digest``,
    waiting for the end of its period (daily and weekly ones at ``digest_hour``, weekly
    ones on ``digest_weekday``, ISO: Monday 1), with the user's digest job for that period
    (docs/delivery.md, "Digests").
    """
    args = decide_args(candidates, at, digest_hour=digest_hour, digest_weekday=digest_weekday)
    if args is not None:
        await decide_with(conn, args)


async def decide_with(conn: Conn, args: list[Any]) -> None:
    """``decide`` with the parameters ``decide_args`` made."""
    await conn.execute(Q.decide, *args)


def decide_args(candidates: list[Candidate], at: datetime | None = None, *,
                digest_hour: int = 8, digest_weekday: int = 1) -> list[Any] | None:
    """The parameters of ``decide`` for ``candidates`` (None when there are none), to
    decide them inside another statement: ``db.events.append(..., deciding=)``."""
    if not candidates:
        return None
    columns = [list(column) for column in zip(*candidates, strict=True)]
    return [*columns[:7], at, columns[7], digest_hour, digest_weekday]


async def claim(
    conn: Conn, channels: list[str], limit: int, lease_seconds: float
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due deliveries of ``channels`` for ``lease_seconds``.

    Each item: ``delivery_id``, ``channel``, ``attempts`` (this attempt's number),
    ``recipient`` (the user), ``digest_at`` (a digest job's period end, else None),
    ``notification`` (the stored row; all None for a digest job), ``contact`` (the
    fields that are set), ``expired`` (its notification's ``expires_at`` has passed,
    by the database's clock) and ``snoozed`` (its notification is away, snoozed; never
    for a push dismissal).
    """
    rows = await conn.fetch(Q.claim, channels, limit, lease_seconds)
    return [
        {
            "delivery_id": r["delivery_id"],
            "channel": r["channel"],
            "attempts": r["attempts"],
            "recipient": r["recipient"],
            "digest_at": r["digest_at"],
            "notification": {k: r[k] for k in _NOTIFICATION},
            "contact": {k: r[k] for k in _CONTACT if r[k] is not None},
            "expired": r["expired"],
            "snoozed": bool(r["snoozed"]),
        }
        for r in rows
    ]


async def sent(conn: Conn, id_: int, attempt: int) -> bool:
    """Record attempt ``attempt`` of ``id_`` as sent; False if the claim was lost."""
    return bool(await conn.fetchval(Q.sent, id_, attempt))


async def failed(conn: Conn, id_: int, attempt: int, reason: str) -> bool:
    """Record ``id_`` as failed for good with ``reason``; False if the claim was lost."""
    return bool(await conn.fetchval(Q.closed, id_, attempt, reason, "failed"))


async def skip_snoozed(conn: Conn, id_: int, attempt: int) -> bool | None:
    """Attempt ``attempt`` of ``id_``, claimed while its notification was snoozed: True
    if recorded skipped ('snoozed'), False if the notification came back meanwhile and
    the row is due again at once, None if the claim was lost."""
    away = await conn.fetchval(Q.skip_snoozed, id_, attempt)
    return None if away is None else bool(away)


async def skipped(conn: Conn, id_: int, attempt: int, reason: str) -> bool:
    """Record ``id_`` as not sent on purpose, for ``reason``; False if the claim was lost."""
    return bool(await conn.fetchval(Q.closed, id_, attempt, reason, "skipped"))


async def retry(conn: Conn, id_: int, attempt: int, error: str, delay: float) -> bool:
    """Make ``id_`` due again in ``delay`` seconds; False if the claim was lost."""
    return bool(await conn.fetchval(Q.retry, id_, attempt, error, delay))


async def by_notification(conn: Conn, notification_id: int) -> list[dict[str, Any]]:
    """The deliveries of one notification, by channel."""
    return [dict(r) for r in await conn.fetch(Q.by_notification, notification_id)]


async def queue_depth(conn: Conn) -> dict[str, int]:
    """How many deliveries wait (``scheduled``), per channel."""
    return {r["channel"]: r["n"] for r in await conn.fetch(Q.queue_depth)}


async def prune(conn: Conn, retention_days: int, timeout: float | None = None) -> int:
    """Delete finished deliveries older than ``retention_days``; return how many."""
    status = await conn.execute(Q.prune, retention_days, timeout=timeout)
    return int(status.split()[-1])


async def snoozed(conn: Conn, notification_ids: list[int]) -> int:
    """Inside the caller's transaction: skip (``snoozed``) the deliveries of
    ``notification_ids``, just snoozed, that are not being sent; how many."""
    return int(await conn.fetchval(Q.snoozed, notification_ids))


async def forget_finished(conn: Conn, notification_ids: list[int]) -> None:
    """Inside the caller's transaction: delete the finished deliveries of
    ``notification_ids``, back from a snooze, so ``decide`` can make new ones."""
    await conn.execute(Q.forget_finished, notification_ids)


async def dismiss(conn: Conn, notification_ids: list[int]) -> tuple[int, int]:
    """Cross-device dismissal of ``notification_ids``, just read, inside the caller's
    transaction (one statement, docs/delivery.md "Cross-device dismissal").

    Their push deliveries not being sent become ``skipped`` (``read in-app``); those
    that may show on a device (sent, being sent, or tried before) get a
    ``push.dismiss`` delivery, due now. Returns ``(skipped,
    dismissals scheduled)``.
    """
    if not notification_ids:
        return 0, 0
    row = await conn.fetchrow(Q.dismiss, notification_ids)
    assert row is not None
    return int(row["skipped"]), int(row["dismissals"])


async def push_state(conn: Conn, notification_id: int) -> tuple[str, bool] | None:
    """The state of a notification's push delivery, and whether it reached a browser
    (``reached``, or ``sent``); None if it has none."""
    row = await conn.fetchrow(Q.push_state, notification_id)
    return None if row is None else (str(row["state"]), bool(row["reached"]))


async def reached(conn: Conn, id_: int, attempt: int) -> None:
    """Attempt ``attempt`` of ``id_`` reached some of its recipient's devices, and the
    delivery is retried or fails for others: ``sent_at`` says when it first did (so
    reading it dismisses it there, ``dismiss``)."""
    await conn.execute(Q.reached, id_, attempt)
