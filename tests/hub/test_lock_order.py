"""Writers take locks in one hub-wide order (counters sorted first, or rows before
counters), so concurrent writers never deadlock. Each test blocks a writer on one lock
and checks it holds none it should only take later."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from hub import messages
from hub.ingest import Applier
from hub.models import MessageSend, NotificationCreate
from hub.notifications import create


async def wait_until_blocked(pool: asyncpg.Pool, task: asyncio.Task[Any]) -> None:
    """Until some backend of this database waits on a lock (the writer under test)."""
    for _ in range(500):
        assert not task.done(), task
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the writer never blocked")


async def counters_free(pool: asyncpg.Pool, users: list[str]) -> bool:
    """Whether no transaction holds a lock on these users' counter rows."""
    try:
        await pool.execute(
            "SELECT 1 FROM user_counters WHERE user_id = ANY($1::text[]) FOR UPDATE NOWAIT", users
        )
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def test_an_ingest_batch_locks_every_recipient_before_applying_any_entry(app):
    svc = app.state.services
    await create(svc, NotificationCreate(user_ids=["amy", "zed"], type="t", title="first"))
    applier = Applier(svc, "stream")
    batch = [
        ("1-0", orjson.dumps({"user_id": "zed", "type": "t", "title": "for zed"})),
        ("1-1", orjson.dumps({"user_id": "amy", "type": "t", "title": "for amy"})),
    ]
    async with svc.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM user_counters WHERE user_id = 'amy' FOR UPDATE")
        task = asyncio.create_task(applier(batch))
        try:
            await wait_until_blocked(svc.pool, task)
            # Entry order would have locked zed (first entry) and then waited for amy.
            assert await counters_free(svc.pool, ["zed"])
        finally:
            await tx.rollback()
    assert await asyncio.wait_for(task, 10) == [None, None]


async def test_delete_for_everyone_locks_notification_rows_before_counters(app):
    svc = app.state.services
    message, _ = await messages.send(svc, "alice", MessageSend(recipient_id="bob", body="hi"))
    note = await svc.pool.fetchval(
        "SELECT id FROM notifications WHERE user_id = 'bob' AND type = 'new_message'"
    )
    async with svc.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        # What bob's mark-all-read holds before it appends its event.
        await holder.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", note)
        task = asyncio.create_task(
            messages.delete(svc, "alice", message["id"], for_everyone=True)
        )
        try:
            await wait_until_blocked(svc.pool, task)
            assert await counters_free(svc.pool, ["alice", "bob"])
        finally:
            await tx.rollback()
    await asyncio.wait_for(task, 10)
    assert await svc.pool.fetchval("SELECT count(*) FROM notifications WHERE id = $1", note) == 0


async def test_delete_for_everyone_counts_the_recipients_inbox_once_their_counter_is_locked(
    app,
):
    """The counts a ``notification.deleted`` carries are read under the recipient's
    counter lock: a read committed while the delete waited for that lock is counted."""
    svc = app.state.services
    message, _ = await messages.send(svc, "alice", MessageSend(recipient_id="bob", body="hi"))
    [other] = (await create(svc, NotificationCreate(user_id="bob", type="t", title="x"))).items
    async with svc.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        # bob reads his other notification on another device: that write holds his
        # counter until it commits.
        await holder.execute("SELECT 1 FROM user_counters WHERE user_id = 'bob' FOR UPDATE")
        task = asyncio.create_task(
            messages.delete(svc, "alice", message["id"], for_everyone=True)
        )
        try:
            await wait_until_blocked(svc.pool, task)
            await holder.execute(
                "UPDATE notifications SET read_at = now(), seen_at = now() WHERE id = $1",
                other["id"],
            )
        finally:
            await tx.commit()
    await asyncio.wait_for(task, 10)
    data = orjson.loads(await svc.pool.fetchval(
        "SELECT data::text FROM user_events WHERE user_id = 'bob' "
        "AND type = 'notification.deleted'"
    ))
    assert (data["unread_count"], data["unseen_count"]) == (0, 0)
