"""Action choices (hub/actions.py): recorded once with their event and outbox row, and
relayed to the real ``{prefix}actions`` Redis stream at least once, exactly once while
nothing fails (docs/ingest.md, "Action choices"). Real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from db.pool import create_pool
from hub import actions, cleanup, notifications
from hub.errors import Conflict, NotFound
from hub.ingest import Applier
from hub.models import NotificationCreate
from hub.services import Services
from hub.settings import Settings
from pubsub.errors import BrokerUnavailable
from pubsub.memory import MemoryBroker
from pubsub.streams import StreamWriter
from tests.conftest import SECRET
from tests.servers import free_port

TIMEOUT = 15
BUTTONS = [{"id": "accept", "label": "Accept", "style": "primary"},
           {"id": "decline", "label": "Decline"}]


@pytest.fixture
async def svc(database_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Services]:
    pool = await asyncio.wait_for(create_pool(database_url), TIMEOUT)
    settings = Settings(database_url=database_url, jwt_secret=SECRET, redis_url=redis_url,
                        redis_prefix=redis_prefix)
    yield Services(settings, pool, MemoryBroker())
    await asyncio.wait_for(pool.close(), TIMEOUT)


@pytest.fixture
async def reader(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@asynccontextmanager
async def writer(svc: Services, url: str | None = None, maxlen: int = 1000
                 ) -> AsyncIterator[StreamWriter]:
    s = svc.settings
    stream = StreamWriter(url or s.redis_url or "", s.redis_prefix + actions.STREAM,
                          maxlen=maxlen, timeout=1.0)
    try:
        yield stream
    finally:
        await stream.close()


async def make(svc: Services, user: str = "ann", **body: Any) -> dict[str, Any]:
    request = NotificationCreate.model_validate({
        "user_id": user, "type": "friend_request", "title": "Friend request",
        "data": {"request_id": 7}, "actions": BUTTONS, **body})
    created = await notifications.create(svc, request)
    return created.items[0]


async def queued(svc: Services) -> list[dict[str, Any]]:
    return [dict(r) for r in await svc.pool.fetch("SELECT * FROM action_outbox ORDER BY id")]


async def test_a_choice_reaches_the_stream_once_with_every_documented_field(svc, reader):
    item = await make(svc)
    chosen = await actions.choose(svc, "ann", item["id"], "accept")
    [row] = await queued(svc)
    async with writer(svc) as stream:
        assert await actions.relay_due(svc, stream) is None
        assert await actions.relay_due(svc, stream) is None  # nothing left: no repeat
    key = svc.settings.redis_prefix + "actions"
    [(_, fields)] = await reader.xrange(key)
    assert fields == {
        "id": str(row["id"]),
        "notification_id": str(item["id"]),
        "user_id": "ann",
        "type": "friend_request",
        "action_id": "accept",
        "data": '{"request_id":7}',
        "acted_at": fields["acted_at"],
    }
    assert fields["acted_at"].endswith("Z")
    assert datetime.fromisoformat(fields["acted_at"]) == chosen["action"]["acted_at"]
    assert await queued(svc) == []


async def test_a_failed_append_keeps_the_choice_queued_for_the_next_try(svc, reader):
    item = await make(svc)
    await actions.choose(svc, "ann", item["id"], "decline")
    async with writer(svc, url=f"redis://127.0.0.1:{free_port()}/0") as down:
        with pytest.raises(BrokerUnavailable):
            await actions.relay_batch(svc, down)
    [row] = await queued(svc)
    assert row["claimed_until"] is None  # released: due at once, not after the lease
    async with writer(svc) as stream:
        assert await actions.relay_batch(svc, stream) == 1
    entries = await reader.xrange(svc.settings.redis_prefix + "actions")
    assert [f["action_id"] for _, f in entries] == ["decline"]
    assert await queued(svc) == []


async def test_relays_of_several_instances_append_each_choice_once(svc, reader):
    items = [await make(svc, user=f"u{i}") for i in range(40)]
    for item in items:
        await actions.choose(svc, item["user_id"], item["id"], "accept")
    async with writer(svc) as one, writer(svc) as two:
        async def relay(stream: StreamWriter) -> None:
            while await actions.relay_batch(svc, stream, limit=3):
                pass
        await asyncio.wait_for(asyncio.gather(relay(one), relay(two), relay(one)), TIMEOUT)
    entries = await reader.xrange(svc.settings.redis_prefix + "actions")
    assert sorted(int(f["notification_id"]) for _, f in entries) == sorted(
        i["id"] for i in items)


async def test_the_stream_is_capped_near_its_maxlen(svc, reader):
    for i in range(300):
        await svc.pool.execute(
            "INSERT INTO action_outbox (notification_id, user_id, type, action_id, data, "
            "acted_at) VALUES ($1, 'ann', 't', 'a', '{}', now())", i + 1)
    async with writer(svc, maxlen=10) as stream:
        while await actions.relay_batch(svc, stream, limit=50):
            pass
    # MAXLEN ~ trims whole nodes of up to 100 entries (stream-node-max-entries).
    assert 10 <= await reader.xlen(svc.settings.redis_prefix + "actions") <= 110


async def test_choose_refuses_without_changing_anything(svc):
    item = await make(svc)
    with pytest.raises(NotFound):
        await actions.choose(svc, "bob", item["id"], "accept")
    with pytest.raises(NotFound):
        await actions.choose(svc, "ann", item["id"], "maybe")
    await actions.choose(svc, "ann", item["id"], "accept")
    with pytest.raises(Conflict):
        await actions.choose(svc, "ann", item["id"], "decline")
    assert [r["action_id"] for r in await queued(svc)] == ["accept"]


async def test_choosing_skips_the_unsent_push_of_an_unread_notification(svc):
    item = await make(svc)
    await svc.pool.execute(
        "INSERT INTO deliveries (notification_id, user_id, channel) VALUES ($1, 'ann', 'push')",
        item["id"])
    svc.delivery_channels = ("push",)
    await actions.choose(svc, "ann", item["id"], "accept")
    state = await svc.pool.fetchrow(
        "SELECT state, last_error FROM deliveries WHERE notification_id = $1", item["id"])
    assert (state["state"], state["last_error"]) == ("skipped", "read in-app")


async def test_choices_never_relayed_are_given_up_after_the_history_days(svc):
    for days in (1, 8):
        await svc.pool.execute(
            "INSERT INTO action_outbox (notification_id, user_id, type, action_id, data, "
            "acted_at) VALUES (1, 'ann', 't', 'a', '{}', now() - make_interval(days => $1))",
            days)
    result = await cleanup.prune_once(svc)
    assert result is not None and result["action_choices"] == 1
    assert len(await queued(svc)) == 1


async def test_ingest_entries_carry_actions_and_bad_ones_are_dead_lettered(svc):
    applier = Applier(svc, "stream")
    good = orjson.dumps({"user_id": "ann", "type": "t", "title": "x", "actions": BUTTONS})
    bad = orjson.dumps({"user_id": "ann", "type": "t", "title": "y",
                        "actions": [*BUTTONS, *BUTTONS]})
    outcomes = await applier([("1-0", good), ("2-0", bad)])
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1].startswith("the request is not valid")
    assert "actions" in outcomes[1]
    rows = await svc.pool.fetch("SELECT title, actions FROM notifications")
    assert [(r["title"], [a["id"] for a in r["actions"]]) for r in rows] == [
        ("x", ["accept", "decline"])]
