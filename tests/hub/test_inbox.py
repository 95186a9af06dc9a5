"""The return of snoozed notifications (hub/inbox.py, via the notification scheduler):
once across instances racing for the same rows, with gap-free seqs, and at once when a
snooze is made on the instance. Real PostgreSQL; each "instance" is its own Services
with its own pool."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from db import notifications as store
from db.pool import create_pool
from hub import inbox, notifications, scheduled
from hub.models import NotificationCreate
from hub.services import Services
from hub.settings import Settings
from pubsub.memory import MemoryBroker
from tests.conftest import SECRET
from tests.waiting import eventually

USERS = ["u1", "u2", "u3"]


@asynccontextmanager
async def instance(database_url: str, data_dir: Path) -> AsyncIterator[Services]:
    pool = await create_pool(database_url, 1, 4)
    broker = MemoryBroker()

    async def nothing() -> None:
        return None

    await broker.start(lambda *_: None, nothing)
    try:
        yield Services(Settings(database_url=database_url, data_dir=data_dir,
                                jwt_secret=SECRET), pool, broker)
    finally:
        await broker.stop()
        await pool.close()


async def snoozed_and_due(svc: Services, count: int) -> list[int]:
    """``count`` notifications per user, each snoozed and already due."""
    ids = []
    for n in range(count):
        created = await notifications.create(svc, NotificationCreate(
            user_ids=USERS, type="t", title=f"n{n}"))
        ids += [i["id"] for i in created.items]
    soon = datetime.now(UTC) + timedelta(hours=1)
    for item_id in ids:
        [row] = await svc.pool.fetch("SELECT user_id FROM notifications WHERE id = $1", item_id)
        await inbox.snooze(svc, row["user_id"], item_id, soon)
    # Their time has come (without the test waiting for a clock).
    await svc.pool.execute("UPDATE notifications SET snoozed_until = now() - interval '1 s'")
    return ids


async def test_instances_returning_at_once_return_each_snoozed_notification_once(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        instance(database_url, tmp_path / "a") as a,
        instance(database_url, tmp_path / "b") as b,
    ):
        ids = await snoozed_and_due(a, 40)

        async def drain(svc: Services) -> int:
            total = 0
            while moved := await inbox.return_due(svc, limit=7):
                total += moved
            return total

        moved = await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
        assert sum(moved) == len(ids)
        rows = await a.pool.fetch(
            "SELECT user_id, seq, type, data FROM user_events ORDER BY user_id, seq")
        returned = Counter(r["data"]["notification"]["id"] for r in rows
                           if r["type"] == "notification.unsnoozed")
        assert returned == Counter(ids)
        for user in USERS:
            seqs = [r["seq"] for r in rows if r["user_id"] == user]
            assert seqs == list(range(1, len(seqs) + 1))
            # Each event's counts are those right after it: one more each time.
            counted = [r["data"]["unread_count"] for r in rows
                       if r["user_id"] == user and r["type"] == "notification.unsnoozed"]
            assert counted == list(range(1, 41))
            assert await store.counts(a.pool, user) == (40, 40)
        assert await inbox.seconds_to_return(a) is None
        assert await inbox.return_due(b) == 0


async def test_the_scheduler_returns_a_snooze_made_here_without_waiting_for_its_recheck(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path / "a") as svc:
        [item] = (await notifications.create(svc, NotificationCreate(
            user_id="u1", type="t", title="later"))).items
        # Rechecking once an hour, it would sleep past the snooze but for the wake-up.
        task = asyncio.create_task(scheduled.run_scheduler(svc, recheck_seconds=3600))
        try:
            await asyncio.sleep(0.2)  # let it go to sleep with nothing to do
            await inbox.snooze(svc, "u1", item["id"], datetime.now(UTC) + timedelta(seconds=1))
            assert await store.counts(svc.pool, "u1") == (0, 0)
            assert 0 < (await inbox.seconds_to_return(svc) or 0) <= 1

            async def back() -> bool:
                return await store.counts(svc.pool, "u1") == (1, 1)

            await eventually(back, timeout=15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_send_due_returns_snoozes_and_tells_when_the_next_one_is_due(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path / "a") as svc:
        made = await notifications.create(svc, NotificationCreate(
            user_ids=["u1"], type="t", title="x"))
        await notifications.create(svc, NotificationCreate(user_ids=["u1"], type="t", title="y"))
        first = made.items[0]["id"]
        await inbox.snooze(svc, "u1", first, datetime.now(UTC) + timedelta(hours=2))
        wait = await scheduled.send_due(svc)
        assert wait is not None and 3600 < wait <= 7200
        await svc.pool.execute("UPDATE notifications SET snoozed_until = now() WHERE id = $1",
                               first)
        assert await scheduled.send_due(svc) is None
        page = await notifications.page(svc, "u1")
        assert [i["title"] for i in page["items"]] == ["x", "y"]
