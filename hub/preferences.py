"""Per-user notification preferences (docs/api.md, "Preferences")."""

from __future__ import annotations

from typing import Any

from db import digests as digest_store
from db import preferences as prefs_store
from db.pool import Conn
from hub import contacts
from hub.models import Preferences, PreferencesPatch
from hub.services import Services


async def get(svc: Services, user_id: str) -> Preferences:
    """The preferences of ``user_id``; defaults if they never saved any."""
    doc = await prefs_store.get(svc.pool, user_id)
    return Preferences() if doc is None else Preferences.load(doc)


async def put(svc: Services, user_id: str, prefs: Preferences) -> Preferences:
    """Store ``prefs`` for ``user_id`` whole and return what was stored; InvalidInput if
    its quiet hours' time zone is one PostgreSQL does not know."""
    await _check_zone(svc, prefs)
    async with svc.write() as work:
        before = await load_for_update(work.conn, user_id)
        stored = await save(work.conn, user_id, prefs, before)
    return _stored(svc, user_id, before, stored)


async def patch(svc: Services, user_id: str, change: PreferencesPatch) -> Preferences:
    """Apply ``change`` to ``user_id``'s preferences and return the result.

    Read, merged and written under the row's lock: concurrent patches of different
    fields all take effect.
    """
    if change.quiet_hours is not None:  # checked before the row is locked
        await contacts.check_zone(svc, change.quiet_hours.timezone,
                                  ["quiet_hours", "timezone"])
    async with svc.write() as work:
        before = await load_for_update(work.conn, user_id)
        after = change.apply(before)
        stored = await save(work.conn, user_id, after, before)
    return _stored(svc, user_id, before, stored)


async def _check_zone(svc: Services, prefs: Preferences) -> None:
    quiet = prefs.quiet_hours
    if quiet is not None:
        await contacts.check_zone(svc, quiet.timezone, ["quiet_hours", "timezone"])


async def load_for_update(conn: Conn, user_id: str) -> Preferences:
    """``user_id``'s preferences (defaults if none), locked until the transaction ends."""
    default = Preferences().model_dump(mode="json")
    return Preferences.load(await prefs_store.get_for_update(conn, user_id, default))


async def save(conn: Conn, user_id: str, prefs: Preferences, before: Preferences
               ) -> Preferences:
    """Write ``prefs`` over ``before`` (read with ``load_for_update``) in the caller's
    transaction. A changed ``digest`` sends the digests not begun yet at once
    (docs/delivery.md, "Digests")."""
    doc = await prefs_store.put(conn, user_id, prefs.model_dump(mode="json"))
    if prefs.digest != before.digest:
        await digest_store.flush(conn, user_id)
    return Preferences.load(doc)


def _stored(svc: Services, user_id: str, before: Preferences, prefs: Preferences
            ) -> Preferences:
    """After the commit: a changed digest wakes the delivery workers (a flushed digest
    is due now), and the user's partners hear of a switch of hide_presence."""
    if prefs.digest != before.digest:
        svc.deliveries_due.set()
    if svc.presence is not None and before.hide_presence != prefs.hide_presence:
        svc.presence.visibility_changed(user_id)
    return prefs


async def load_many(
    conn: Conn, user_ids: list[str]
) -> dict[str, Preferences]:
    """The saved preferences of those ``user_ids`` that saved any (one query)."""
    return loaded(await prefs_store.get_many(conn, user_ids) if user_ids else {})


def loaded(docs: dict[str, dict[str, Any]]) -> dict[str, Preferences]:
    """Saved preferences documents, by user, as ``Preferences``."""
    return {user: Preferences.load(doc) for user, doc in docs.items()}


def split(
    prefs: dict[str, Preferences], user_ids: list[str], type_: str
) -> tuple[list[str], list[str]]:
    """Split ``user_ids`` into (allowed, suppressed) for an in-app notification of ``type_``."""
    allowed, suppressed = [], []
    for user in user_ids:
        saved = prefs.get(user)
        if saved is None or saved.allows_in_app(type_):
            allowed.append(user)
        else:
            suppressed.append(user)
    return allowed, suppressed
