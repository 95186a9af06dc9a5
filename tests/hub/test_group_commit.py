"""Notification creates through the group-commit writer, on real PostgreSQL: batches
keep per-user seqs gapless and in order, a bad request fails alone, keys replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from db.errors import DatabaseRejected
from hub import notifications
from hub.errors import InvalidInput
from hub.models import NotificationCreate
from hub.services import Services
from tests.hub.conftest import listening_services

TIMEOUT = 15
USERS = [f"u{n}" for n in range(10)]


@pytest.fixture
async def published() -> dict[str, list[dict[str, Any]]]:
    return {}


@pytest.fixture
async def svc(
    database_url: str, tmp_path: Any, published: dict[str, list[dict[str, Any]]]
) -> AsyncIterator[Services]:
    """Services on this test's database; the broker records each user's frames."""

    def record(channel: str, seq: int | None, message: bytes) -> None:
        published.setdefault(channel.removeprefix("user:"), []).append(orjson.loads(message))

    async with listening_services(database_url, tmp_path, record, USERS) as svc:
        yield svc


def create(svc: Services, user: str, title: str, **extra: Any) -> asyncio.Task[Any]:
    request = NotificationCreate(user_id=user, type="t", title=title, **extra)
    return asyncio.create_task(notifications.create(svc, request))


async def test_concurrent_creates_commit_in_shared_batches_with_gapless_seqs_in_order(
    svc: Services, published: dict[str, list[dict[str, Any]]]
) -> None:
    tasks = [create(svc, USERS[n % 10], f"n{n}") for n in range(300)]
    results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    writer = notifications.writer(svc)
    assert writer.jobs == 300
    assert writer.batches < 300  # batched: fewer transactions than creates
    assert all(len(r.items) == 1 and not r.replayed for r in results)
    for user in USERS:
        frames = published[user]
        assert [f["seq"] for f in frames] == list(range(1, 31))
        # Submission order is commit order: a user's titles arrive as they were sent.
        titles = [f["data"]["title"] for f in frames]
        assert titles == sorted(titles, key=lambda t: int(t[1:]))
        logged = await svc.pool.fetch(
            "SELECT seq FROM user_events WHERE user_id = $1 ORDER BY seq", user
        )
        assert [r["seq"] for r in logged] == list(range(1, 31))
    assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 300


async def test_a_request_the_database_rejects_fails_alone_and_its_batch_commits(
    svc: Services, published: dict[str, list[dict[str, Any]]]
) -> None:
    await svc.pool.execute(
        "ALTER TABLE notifications ADD CONSTRAINT no_boom CHECK (title <> 'boom')"
    )
    hold = create(svc, "u0", "first")  # the others queue up behind this commit
    tasks = [create(svc, "u1", "a"), create(svc, "u1", "boom"), create(svc, "u1", "b")]
    results = await asyncio.wait_for(
        asyncio.gather(hold, *tasks, return_exceptions=True), TIMEOUT
    )
    assert isinstance(results[2], DatabaseRejected)
    assert [r.items[0]["title"] for r in (results[1], results[3])] == ["a", "b"]
    assert [(f["seq"], f["data"]["title"]) for f in published["u1"]] == [(1, "a"), (2, "b")]


async def test_an_unknown_template_fails_its_request_alone(svc: Services) -> None:
    hold = create(svc, "u0", "first")
    bad = asyncio.create_task(notifications.create(
        svc, NotificationCreate(user_id="u2", type="t", template="missing")
    ))
    good = create(svc, "u2", "fine")
    results = await asyncio.wait_for(
        asyncio.gather(hold, bad, good, return_exceptions=True), TIMEOUT
    )
    assert isinstance(results[1], InvalidInput)
    assert results[2].items[0]["title"] == "fine"


async def test_the_same_key_in_one_burst_creates_once_and_replays_for_the_rest(
    svc: Services, published: dict[str, list[dict[str, Any]]]
) -> None:
    tasks = [create(svc, "u3", "once", idempotency_key="k-1") for _ in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert [r.replayed for r in results] == [False, True, True, True, True]
    ids = {r.items[0]["id"] for r in results}
    assert len(ids) == 1
    assert [f["seq"] for f in published["u3"]] == [1]


async def test_a_replayed_key_returns_the_first_result_even_if_its_template_is_gone_now(
    svc: Services,
) -> None:
    await svc.pool.execute(
        "INSERT INTO templates (key, type, title, body) VALUES ('greet', 't', 'Hi {name}', '')"
    )
    request = NotificationCreate(
        user_id="u4", type="t", template="greet", data={"name": "Ann"}, idempotency_key="k-2"
    )
    first = await asyncio.wait_for(notifications.create(svc, request), TIMEOUT)
    await svc.pool.execute("DELETE FROM templates WHERE key = 'greet'")
    again = await asyncio.wait_for(notifications.create(svc, request), TIMEOUT)
    assert again.replayed and again.items == first.items
    assert first.items[0]["title"] == "Hi Ann"
    fresh = request.model_copy(update={"idempotency_key": "k-3"})
    with pytest.raises(InvalidInput):
        await asyncio.wait_for(notifications.create(svc, fresh), TIMEOUT)
    # The refused request left its key free.
    assert await svc.pool.fetchval(
        "SELECT count(*) FROM notification_requests WHERE idempotency_key = 'k-3'"
    ) == 0


async def test_a_plain_batch_writes_in_one_statement_without_a_transaction_of_its_own(
    database_url: str, tmp_path: Any
) -> None:
    """Ids, preferences and templates are read, then one statement claims the keys,
    stores the rows and logs their events: atomic alone, so no BEGIN and COMMIT. When
    a key was used before, or there are keys but no rows, that statement writes
    nothing and the batch is made again in a transaction, where the key replays."""
    sent: list[str] = []
    async with listening_services(database_url, tmp_path, lambda *_: None, ["u1"],
                                  connections=1) as svc:
        async with svc.pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(lambda record: sent.append(record.query))
        await svc.pool.execute(
            "INSERT INTO preferences (user_id, prefs) VALUES ('muted', $1)", {"muted": True})

        async def run(user: str, key: str | None) -> tuple[Any, list[str]]:
            sent.clear()
            made = await asyncio.wait_for(notifications.create(svc, NotificationCreate(
                user_id=user, type="t", title="plain", idempotency_key=key)), TIMEOUT)
            await asyncio.sleep(0)  # asyncpg calls the loggers soon after, not at once
            return made, list(sent)

        for key in (None, "k-0"):  # teach asyncpg the types first
            await run("u1", key)
        _, plain = await run("u1", None)
        fresh, keyed = await run("u1", "k-1")
        again, replayed = await run("u1", "k-1")
        muted, suppressed = await run("muted", "k-2")
        # Stored as answered: created_at is the time the batch read, not its write's.
        assert await svc.pool.fetchval(
            "SELECT created_at FROM notifications WHERE id = $1", fresh.items[0]["id"]
        ) == fresh.items[0]["created_at"]
        assert await svc.pool.fetchval(
            "SELECT notification_ids FROM notification_requests WHERE idempotency_key = 'k-1'"
        ) == [fresh.items[0]["id"]]
        assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 4
    for statements in (plain, keyed):
        assert len(statements) == 2 and "BEGIN;" not in statements
        assert "INSERT INTO notifications" in statements[1] and "user_events" in statements[1]
    assert "notification_requests" in keyed[1]
    assert again.replayed and again.items == fresh.items
    assert (muted.items, muted.suppressed) == ([], ["muted"])
    for statements in (replayed, suppressed):
        assert "BEGIN;" in statements and statements[-1] == "COMMIT;"


async def test_a_batch_written_alone_needs_a_transaction_to_look_up_a_refused_key(
    svc: Services,
) -> None:
    """A refused request with a key replays if the key was used: that lookup must not
    follow the write, so the batch writes nothing alone and is made in a transaction."""
    plain = NotificationCreate(user_id="u6", type="t", title="plain")
    refused = NotificationCreate(user_id="u6", type="t", template="missing",
                                 idempotency_key="k-9")
    async with svc.pool.acquire() as conn:
        with pytest.raises(notifications.Transactional):
            await notifications.create_many_in(conn, [plain, refused], alone=True)
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 0
    made, failed = await asyncio.wait_for(asyncio.gather(
        notifications.create(svc, plain), notifications.create(svc, refused),
        return_exceptions=True), TIMEOUT)
    assert isinstance(failed, InvalidInput) and made.items[0]["title"] == "plain"
    assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 1


async def test_metrics_count_transactions_and_the_creates_in_them(svc: Services) -> None:
    tasks = [create(svc, USERS[n % 10], f"n{n}") for n in range(50)]
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    batches = svc.metrics.write_batches._value.get()
    assert svc.metrics.write_batch_jobs._value.get() == 50
    assert 1 <= batches < 50
