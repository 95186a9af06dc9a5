"""Per-user notification preferences (docs/api.md, "Preferences")."""

from __future__ import annotations

from typing import Any

from db import preferences as store
from db.pool import Conn
from hub.models import Preferences, PreferencesPatch
from hub.services import Services


async def get(svc: Services, user_id: str) -> Preferences:
    """The preferences of ``user_id``; defaults if they never saved any."""
    doc = await store.get(svc.pool, user_id)
    return Preferences() if doc is None else Preferences.load(doc)


async def put(svc: Services, user_id: str, prefs: Preferences) -> Preferences:
    """Store ``prefs`` for ``user_id`` whole and return what was stored."""
    async with svc.write() as work:
        default = Preferences().model_dump(mode="json")
        before = await store.get_for_update(work.conn, user_id, default)
        stored = await store.put(work.conn, user_id, prefs.model_dump(mode="json"))
    return _stored(svc, user_id, before, stored)


async def patch(svc: Services, user_id: str, change: PreferencesPatch) -> Preferences:
    """Apply ``change`` to ``user_id``'s preferences and return the result.

    Read, merged and written under the row's lock: concurrent patches of different
    fields all take effect.
    """
    async with svc.write() as work:
        default = Preferences().model_dump(mode="json")
        doc = await store.get_for_update(work.conn, user_id, default)
        merged = change.apply(Preferences.load(doc))
        stored = await store.put(work.conn, user_id, merged.model_dump(mode="json"))
    return _stored(svc, user_id, doc, stored)


def _stored(
    svc: Services, user_id: str, before: dict[str, Any], after: dict[str, Any]
) -> Preferences:
    """``after`` as Preferences; the user's partners hear of a switch of hide_presence."""
    prefs = Preferences.load(after)
    if svc.presence is not None and Preferences.load(before).hide_presence != prefs.hide_presence:
        svc.presence.visibility_changed(user_id)
    return prefs


async def load_many(
    conn: Conn, user_ids: list[str]
) -> dict[str, Preferences]:
    """The saved preferences of those ``user_ids`` that saved any (one query)."""
    docs = await store.get_many(conn, user_ids) if user_ids else {}
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
