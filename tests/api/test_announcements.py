"""Announcements over REST, their live broadcasts, and the scheduler (docs/api.md, docs/live.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from db.pool import create_pool
from hub import announcements
from hub.events import BROADCAST
from hub.models import AnnouncementCreate
from hub.services import Services
from hub.settings import Settings
from pubsub.memory import MemoryBroker
from tests.conftest import SECRET, SERVICE, auth

ADMIN = auth("boss", admin=True)


def at(seconds: float) -> str:
    """An ISO timestamp ``seconds`` from now."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def post(client: httpx.AsyncClient, headers: dict[str, str] = SERVICE,
               **body: Any) -> httpx.Response:
    body.setdefault("title", "Maintenance tonight")
    return await client.post("/api/announcements", json=body, headers=headers)


async def listed_ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    r = await client.get("/api/announcements", headers=auth("u1"), params=params)
    assert r.status_code == 200
    return [a["id"] for a in r.json()["items"]]


# ---- REST ---------------------------------------------------------------------------


async def test_created_announcement_has_every_contract_field_and_defaults(client):
    r = await post(client, body="From 22:00 to 23:00")
    assert r.status_code == 201
    item = r.json()
    assert set(item) == {"id", "title", "body", "level", "starts_at", "ends_at", "created_at"}
    assert item["level"] == "info" and item["ends_at"] is None
    assert item["body"] == "From 22:00 to 23:00"
    assert item["starts_at"].endswith("Z") and item["created_at"].endswith("Z")


async def test_any_user_sees_only_active_announcements_newest_first(client, app):
    older = (await post(client, title="older", starts_at=at(-3600))).json()["id"]
    newer = (await post(client, title="newer", level="critical")).json()["id"]
    await post(client, title="scheduled", starts_at=at(3600))
    ended = (await post(client, title="ended", starts_at=at(-7200))).json()["id"]
    await app.state.services.pool.execute(
        "UPDATE announcements SET ends_at = now() - interval '1 minute' WHERE id = $1", ended
    )
    assert await listed_ids(client) == [newer, older]


async def test_announcement_with_future_end_is_listed_until_then(client):
    id_ = (await post(client, ends_at=at(3600))).json()["id"]
    assert await listed_ids(client) == [id_]


async def test_api_key_can_list_announcements(client):
    await post(client)
    r = await client.get("/api/announcements", headers=SERVICE)
    assert r.status_code == 200 and len(r.json()["items"]) == 1


async def test_listing_announcements_without_credentials_is_401(client):
    r = await client.get("/api/announcements")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


async def test_admin_sees_scheduled_announcements_with_include_scheduled(client):
    now = (await post(client)).json()["id"]
    later = (await post(client, starts_at=at(3600))).json()["id"]
    r = await client.get("/api/announcements", params={"include_scheduled": "true"},
                         headers=ADMIN)
    assert [a["id"] for a in r.json()["items"]] == [later, now]


async def test_include_scheduled_is_403_for_a_plain_user(client):
    r = await client.get("/api/announcements", params={"include_scheduled": "true"},
                         headers=auth("u1"))
    assert r.status_code == 403


async def test_admin_user_can_create_announcement(client):
    assert (await post(client, headers=ADMIN)).status_code == 201


async def test_plain_user_cannot_create_announcement(client):
    r = await post(client, headers=auth("u1"))
    assert r.status_code == 403
    assert r.json()["status"] == 403


async def test_creating_announcement_without_credentials_is_401(client):
    assert (await post(client, headers={})).status_code == 401


@pytest.mark.parametrize("body", [
    {"title": ""},
    {"title": "x" * 201},
    {"body": "x" * 2001},
    {"level": "urgent"},
    {"starts_at": "2030-01-01T10:00:00"},
    {"starts_at": "yesterday"},
    {"color": "red"},
])
async def test_invalid_announcement_is_422(client, body):
    r = await post(client, **body)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


async def test_ends_at_before_starts_at_is_422(client):
    r = await post(client, starts_at=at(7200), ends_at=at(3600))
    assert r.status_code == 422
    assert "ends_at" in str(r.json()["errors"])


async def test_ends_at_in_the_past_is_422(client):
    r = await post(client, ends_at=at(-60))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"loc": ["ends_at"], "msg": "must be in the future"}]


async def test_body_that_is_not_json_is_422(client):
    r = await client.post("/api/announcements", content=b"{", headers=SERVICE)
    assert r.status_code == 422


async def test_deleted_announcement_is_gone(client):
    id_ = (await post(client)).json()["id"]
    r = await client.delete(f"/api/announcements/{id_}", headers=ADMIN)
    assert r.status_code == 204 and r.content == b""
    assert await listed_ids(client) == []
    again = await client.delete(f"/api/announcements/{id_}", headers=ADMIN)
    assert again.status_code == 404


@pytest.mark.parametrize("id_", ["999999", "abc", "0"])
async def test_deleting_missing_announcement_is_404(client, id_):
    r = await client.delete(f"/api/announcements/{id_}", headers=SERVICE)
    assert r.status_code == 404


async def test_plain_user_cannot_delete_announcement(client):
    id_ = (await post(client)).json()["id"]
    r = await client.delete(f"/api/announcements/{id_}", headers=auth("u1"))
    assert r.status_code == 403
    assert await listed_ids(client) == [id_]


# ---- live broadcasts and the scheduler ----------------------------------------------


class Listener:
    """A hub instance's services whose broker records every broadcast it sees."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.broker = MemoryBroker()
        self.svc = Services(Settings(jwt_secret=SECRET), pool, self.broker)

    async def start(self) -> Listener:
        await self.broker.start(self._on_message, _nothing)
        await self.broker.subscribe(BROADCAST)
        return self

    def _on_message(self, channel: str, seq: int | None, message: bytes) -> None:
        assert channel == BROADCAST
        self.events.append(orjson.loads(message))
        self.arrived.set()

    async def next_event(self) -> dict[str, Any]:
        await asyncio.wait_for(self.arrived.wait(), timeout=10)
        self.arrived.clear()
        return self.events[-1]


async def _nothing() -> None:
    return None


async def until(predicate: Callable[[], object]) -> None:
    """Return once ``predicate()`` is true (callers bound this with wait_for)."""
    while not predicate():
        await asyncio.sleep(0.02)


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools on this test's database, standing in for two hub instances."""
    opened = [await create_pool(database_url, 1, 2) for _ in range(2)]
    try:
        yield opened
    finally:
        for pool in opened:
            await pool.close()


async def test_announcement_that_starts_now_is_broadcast_with_seq_null(pools):
    hub = await Listener(pools[0]).start()
    item = await announcements.create(hub.svc, AnnouncementCreate(title="Hello", level="warning"))
    event = await hub.next_event()
    assert event["type"] == "announcement.created" and event["seq"] is None
    assert event["data"]["id"] == item["id"] and event["data"]["level"] == "warning"
    assert set(event["data"]) == {"id", "title", "body", "level", "starts_at", "ends_at",
                                  "created_at"}


async def test_deleting_announcement_broadcasts_its_id(pools):
    hub = await Listener(pools[0]).start()
    item = await announcements.create(hub.svc, AnnouncementCreate(title="Hello"))
    await hub.next_event()
    await announcements.delete(hub.svc, item["id"])
    assert await hub.next_event() == {
        "type": "announcement.deleted", "seq": None, "data": {"id": item["id"]}
    }


async def test_scheduled_announcement_is_not_broadcast_before_it_starts(pools):
    hub = await Listener(pools[0]).start()
    starts = datetime.now(UTC) + timedelta(hours=1)
    await announcements.create(hub.svc, AnnouncementCreate(title="Later", starts_at=starts))
    assert await announcements.announce_due(hub.svc) == []
    assert hub.events == []


async def test_scheduler_broadcasts_announcement_once_when_it_starts(pools):
    first, second = [await Listener(pool).start() for pool in pools]
    starts = datetime.now(UTC) + timedelta(seconds=0.3)
    item = await announcements.create(first.svc, AnnouncementCreate(title="Soon",
                                                                    starts_at=starts))
    assert first.events == []
    tasks = [asyncio.create_task(announcements.run_scheduler(h.svc, recheck_seconds=0.1))
             for h in (first, second)]
    try:
        await asyncio.wait_for(until(lambda: first.events or second.events), timeout=10)
        # Both schedulers keep looking; nothing is left for either to claim.
        assert await announcements.announce_due(first.svc) == []
        assert await announcements.announce_due(second.svc) == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    events = first.events + second.events
    assert [(e["type"], e["data"]["id"]) for e in events] == [
        ("announcement.created", item["id"])
    ]


async def test_concurrent_claims_broadcast_each_announcement_exactly_once(pools):
    first, second = [await Listener(pool).start() for pool in pools]
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = [
        (await announcements.create(first.svc, AnnouncementCreate(title=f"a{i}",
                                                                   starts_at=later)))["id"]
        for i in range(20)
    ]
    await pools[0].execute("UPDATE announcements SET starts_at = now() - interval '1 second'")
    results = await asyncio.gather(announcements.announce_due(first.svc),
                                   announcements.announce_due(second.svc))
    assert sorted(a["id"] for sent in results for a in sent) == ids
    assert sorted(e["data"]["id"] for e in first.events + second.events) == ids
    assert await announcements.announce_due(first.svc) == []


async def test_announcement_that_ended_before_it_was_claimed_is_not_broadcast(pools):
    hub = await Listener(pools[0]).start()
    later = datetime.now(UTC) + timedelta(hours=1)
    await announcements.create(hub.svc, AnnouncementCreate(title="Missed", starts_at=later))
    await pools[0].execute(
        "UPDATE announcements SET starts_at = now() - interval '2 hours', "
        "ends_at = now() - interval '1 hour'"
    )
    assert await announcements.announce_due(hub.svc) == []
    assert hub.events == []
    pending = await pools[0].fetchval(
        "SELECT count(*) FROM announcements WHERE announced_at IS NULL"
    )
    assert pending == 0


async def test_scheduler_survives_database_errors_and_keeps_running(pools):
    hub = await Listener(pools[0]).start()
    await pools[0].close()
    task = asyncio.create_task(announcements.run_scheduler(hub.svc, recheck_seconds=0.05))
    try:
        await asyncio.sleep(0.2)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
