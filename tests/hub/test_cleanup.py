"""Retention: old read notifications and old events are pruned, one instance at a time."""

from __future__ import annotations

import asyncio

from db.cleanup import LOCK_ID
from db.pool import connect
from hub.cleanup import prune_once
from hub.models import NotificationCreate
from hub.notifications import create, mark_read


async def test_prune_removes_old_read_notifications_only(app):
    svc = app.state.services
    made = await create(svc, NotificationCreate(user_ids=["u1", "u2"], type="t", title="x"))
    old_read, old_unread = (n["id"] for n in made.items)
    await mark_read(svc, "u1", [old_read])
    fresh = (await create(svc, NotificationCreate(user_id="u1", type="t", title="y"))).items[0]
    await mark_read(svc, "u1", [fresh["id"]])
    await svc.pool.execute(
        "UPDATE notifications SET read_at = now() - interval '91 days', "
        "created_at = now() - interval '100 days' WHERE id = ANY($1::bigint[])",
        [old_read, old_unread],
    )
    await svc.pool.execute(
        "UPDATE notifications SET read_at = NULL WHERE id = $1", old_unread
    )
    result = await prune_once(svc)
    assert result is not None and result["notifications"] == 1
    left = {r["id"] for r in await svc.pool.fetch("SELECT id FROM notifications")}
    assert left == {old_unread, fresh["id"]}


async def test_prune_is_skipped_while_another_instance_holds_the_lock(app, database_url):
    svc = app.state.services
    # A direct connection: the session lock must hold whatever pooler the app is behind.
    holder = await connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        assert await asyncio.wait_for(prune_once(svc), timeout=10) is None
    finally:
        await holder.close()
    assert await asyncio.wait_for(prune_once(svc), timeout=10) is not None
