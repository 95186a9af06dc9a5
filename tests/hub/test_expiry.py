"""expires_at (docs/delivery.md, "Expiring notifications"; docs/api.md): validated on
create and ingest, hidden from the inbox once past, swept through the delete path, and
never delivered. Real PostgreSQL, the hub's real workers and sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from hub import delivery
from hub.ingest import Applier
from tests.conftest import SERVICE, auth
from tests.hub.recording_channel import Recorder
from tests.hub.test_delivery import create, hub
from tests.waiting import eventually


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The only delivery channel of this test's hubs, as ``email``."""
    rec = Recorder()
    monkeypatch.setattr(delivery, "REGISTRY", {"email": rec})
    return rec


#: A sweeper that never runs within a test: what is checked is the queries' own filter.
NO_SWEEP = {"expiry_sweep_seconds": 3600}


def stamp(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def inbox(app: Any, user: str) -> dict[str, Any]:
    r = await app.state.client.get("/api/notifications", headers=auth(user))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_expires_at_in_the_past_is_422_naming_the_field(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_id": "ann", "type": "t", "title": "Late", "expires_at": stamp(-60)})
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["loc"] == ["expires_at"]
        assert "future" in r.json()["errors"][0]["msg"]


async def test_expires_at_beyond_the_retention_horizon_is_422(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0, retention_days=7, **NO_SWEEP) as app:
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_id": "ann", "type": "t", "title": "Far", "expires_at": stamp(8 * 86400)})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == ["expires_at"]
        assert "7 days" in r.json()["errors"][0]["msg"]
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_id": "ann", "type": "t", "title": "Near", "expires_at": stamp(6 * 86400)})
        assert r.status_code == 201, r.text


async def test_expires_at_without_a_time_zone_or_not_a_timestamp_is_422(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        for value in ["2999-01-01T00:00:00", "tomorrow", 12345]:
            r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
                "user_id": "ann", "type": "t", "title": "x", "expires_at": value})
            assert r.status_code == 422, (value, r.text)
            assert r.json()["errors"][0]["loc"][0] == "expires_at"


async def test_expires_at_is_returned_and_null_when_none(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        [item] = (await create(app, user_id="ann", expires_at=when.isoformat()))["items"]
        assert datetime.fromisoformat(item["expires_at"]) == when
        [plain] = (await create(app, user_id="ann"))["items"]
        assert plain["expires_at"] is None
        listed = {i["id"]: i["expires_at"] for i in (await inbox(app, "ann"))["items"]}
        assert datetime.fromisoformat(listed[item["id"]]) == when
        assert listed[plain["id"]] is None


async def test_an_expired_notification_leaves_the_list_and_unread_count_at_once(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        [short] = (await create(app, user_id="ann", expires_at=stamp(1.5)))["items"]
        [kept] = (await create(app, user_id="ann"))["items"]
        page = await inbox(app, "ann")
        assert {i["id"] for i in page["items"]} == {short["id"], kept["id"]}
        assert page["unread_count"] == 2

        async def hidden() -> bool:
            page = await inbox(app, "ann")
            return [i["id"] for i in page["items"]] == [kept["id"]] \
                and page["unread_count"] == 1
        await eventually(hidden)
        r = await app.state.client.get("/api/notifications/unread-count", headers=auth("ann"))
        assert r.json() == {"count": 1, "unseen": 1}
        r = await app.state.client.get("/api/notifications?unread_only=true",
                                       headers=auth("ann"))
        assert [i["id"] for i in r.json()["items"]] == [kept["id"]]
        # Not swept (the sweeper is off here): the row is only hidden.
        svc = app.state.services
        assert await svc.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE id = $1", short["id"]) == 1


async def test_the_sweeper_deletes_expired_notifications_with_their_deliveries_and_events(
    settings_env, recorder
):
    from hub import expiry

    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        svc = app.state.services
        r = await app.state.client.put("/api/users/ann/contact",
                                       json={"email": "ann@example.com"}, headers=SERVICE)
        assert r.status_code == 200, r.text
        [short] = (await create(app, user_id="ann", expires_at=stamp(1)))["items"]
        [kept] = (await create(app, user_id="ann", expires_at=stamp(3600)))["items"]
        assert await svc.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE notification_id = $1", short["id"]) == 1
        assert await expiry.sweep_once(svc) == 0  # not expired yet

        async def swept() -> bool:
            return await expiry.sweep_once(svc) == 1
        await eventually(swept)
        assert await svc.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE id = $1", short["id"]) == 0
        assert await svc.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE notification_id = $1", short["id"]) == 0
        rows = await svc.pool.fetch(
            "SELECT type, data FROM user_events WHERE user_id = 'ann' ORDER BY seq")
        last = rows[-1]
        assert last["type"] == "notification.deleted"
        data = last["data"]
        data = orjson.loads(data) if isinstance(data, str) else data
        assert data == {"id": short["id"], "unread_count": 1, "unseen_count": 1}
        assert [i["id"] for i in (await inbox(app, "ann"))["items"]] == [kept["id"]]


async def test_a_delivery_whose_notification_expired_before_it_went_out_is_skipped(
    settings_env, recorder: Recorder
):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        r = await app.state.client.put("/api/users/ann/contact",
                                       json={"email": "ann@example.com"}, headers=SERVICE)
        assert r.status_code == 200, r.text
        [item] = (await create(app, user_id="ann", expires_at=stamp(1)))["items"]

        async def hidden() -> bool:
            return not (await inbox(app, "ann"))["items"]
        await eventually(hidden)
    # Workers start only now, after it expired, and the sweeper has not removed it.
    async with hub(settings_env, **NO_SWEEP) as app:
        async def finished() -> Any:
            row = await app.state.services.pool.fetchrow(
                "SELECT state, last_error FROM deliveries WHERE notification_id = $1",
                item["id"])
            return row if row["state"] != "scheduled" else None
        row = await eventually(finished)
        assert (row["state"], row["last_error"]) == ("skipped", "expired")
        assert recorder.sent == [] and recorder.attempts == []


async def test_a_delivery_of_a_notification_not_expired_is_sent(settings_env, recorder):
    async with hub(settings_env, **NO_SWEEP) as app:
        r = await app.state.client.put("/api/users/ann/contact",
                                       json={"email": "ann@example.com"}, headers=SERVICE)
        assert r.status_code == 200, r.text
        [item] = (await create(app, user_id="ann", expires_at=stamp(3600)))["items"]
        await eventually(lambda: recorder.sent)
        assert recorder.sent[0].notification["id"] == item["id"]


async def test_ingest_accepts_expires_at_and_dead_letters_a_past_one(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0, **NO_SWEEP) as app:
        svc = app.state.services
        applier = Applier(svc, "stream")
        good = orjson.dumps({"user_id": "ann", "type": "t", "title": "Soon gone",
                             "expires_at": stamp(3600)})
        past = orjson.dumps({"user_id": "ann", "type": "t", "title": "Gone",
                             "expires_at": stamp(-1)})
        outcomes = await applier([("1-0", good), ("2-0", past)])
        assert outcomes[0] is None
        assert outcomes[1] is not None and "expires_at" in outcomes[1]
        [item] = (await inbox(app, "ann"))["items"]
        assert item["title"] == "Soon gone" and item["expires_at"] is not None
