"""Scheduled notifications (docs/delivery.md, "Scheduled notifications"; docs/api.md
``send_at``): stored at once, out of the inbox, created once at ``send_at`` through the
group commit, cancellable until then. Real PostgreSQL, the hub's own scheduler, workers
and writer; the channel is the recording one (as ``email``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from db import events as event_log
from hub import delivery, notifications, scheduled
from hub.ingest import Applier
from tests.conftest import SERVICE, auth
from tests.hub.recording_channel import Recorder
from tests.hub.test_delivery import hub
from tests.waiting import eventually


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The only delivery channel of this test's hubs, as ``email``."""
    rec = Recorder()
    monkeypatch.setattr(delivery, "REGISTRY", {"email": rec})
    return rec


def stamp(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def post(app: Any, status: int = 202, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "grade_posted")
    body.setdefault("title", "Grade posted")
    r = await app.state.client.post("/api/notifications", json=body, headers=SERVICE)
    assert r.status_code == status, r.text
    return dict(r.json())


async def inbox(app: Any, user: str) -> dict[str, Any]:
    r = await app.state.client.get("/api/notifications", headers=auth(user))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def arrived(app: Any, user: str, title: str) -> dict[str, Any] | None:
    return next((i for i in (await inbox(app, user))["items"] if i["title"] == title), None)


async def last_seq(app: Any, user: str) -> int:
    seq, _ = await event_log.bounds(app.state.services.pool, user)
    return seq


async def test_a_scheduled_create_is_stored_and_stays_out_of_the_inbox_until_send_at(
    settings_env, recorder
):
    async with hub(settings_env) as app:
        await app.state.client.put("/api/users/ann/contact", headers=SERVICE,
                                   json={"email": "ann@example.com"})
        made = await post(app, user_id="ann", title="Later", send_at=stamp(3),
                          data={"k": 1})
        assert made["status"] == "scheduled" and made["user_ids"] == ["ann"]
        assert made["title"] == "Later" and made["data"] == {"k": 1}
        assert datetime.fromisoformat(made["send_at"]) > datetime.now(UTC)
        page = await inbox(app, "ann")
        assert page["items"] == [] and page["unread_count"] == 0
        assert await last_seq(app, "ann") == 0
        r = await app.state.client.get(f"/api/notifications/{made['id']}", headers=SERVICE)
        assert r.status_code == 200 and r.json() == made
        r = await app.state.client.get(f"/api/notifications/{made['id']}/deliveries",
                                       headers=SERVICE)
        assert r.status_code == 404  # no deliveries decided yet
        assert recorder.attempts == []

        sent = await eventually(lambda: arrived(app, "ann", "Later"), timeout=15)
        assert sent["id"] > made["id"] and sent["data"] == {"k": 1} and not sent["read"]
        assert (await inbox(app, "ann"))["unread_count"] == 1
        assert await last_seq(app, "ann") == 1
        await eventually(lambda: len(recorder.sent) == 1, timeout=15)
        assert recorder.sent[0].notification["id"] == sent["id"]
        r = await app.state.client.get(f"/api/notifications/{made['id']}", headers=SERVICE)
        assert r.status_code == 404  # sent: it is a notification with its own id now


async def test_send_at_in_the_past_or_within_a_second_is_now(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        past = await post(app, 201, user_id="ann", send_at=stamp(-3600))
        soon = await post(app, 201, user_id="ann", send_at=stamp(0.5))
        assert len(past["items"]) == len(soon["items"]) == 1
        assert len((await inbox(app, "ann"))["items"]) == 2


@pytest.mark.parametrize(("body", "msg"), [
    ({"send_at": stamp(366 * 86400)}, "within 365 days"),
    ({"send_at": "2030-01-01T10:00:00"}, "time zone"),
    ({"send_at": 1700000000}, "RFC 3339"),
    ({"send_at": stamp(7200), "expires_at": stamp(3600)}, "before expires_at"),
])
async def test_a_bad_send_at_is_422_naming_it(settings_env, recorder, body, msg):
    async with hub(settings_env, delivery_workers=0) as app:
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_id": "ann", "type": "t", "title": "x", **body})
        assert r.status_code == 422, r.text
        [error] = r.json()["errors"]
        assert error["loc"] == ["send_at"] and msg in error["msg"]


async def test_expires_at_is_judged_from_send_at(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0, retention_days=7) as app:
        ok = await post(app, user_id="ann", send_at=stamp(5 * 86400),
                        expires_at=stamp(11 * 86400))
        assert ok["expires_at"] is not None
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_id": "ann", "type": "t", "title": "x", "send_at": stamp(86400),
            "expires_at": stamp(9 * 86400)})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["expires_at"]


async def test_delete_by_a_service_cancels_it_and_it_is_never_sent(settings_env, recorder):
    async with hub(settings_env) as app:
        client = app.state.client
        cancelled = await post(app, user_id="ann", title="Cancelled", send_at=stamp(3))
        marker = await post(app, user_id="ann", title="Marker", send_at=stamp(3.5))
        for who in (auth("ann"), auth("bob")):  # not theirs to see or cancel
            assert (await client.get(f"/api/notifications/{cancelled['id']}",
                                     headers=who)).status_code == 404
            assert (await client.delete(f"/api/notifications/{cancelled['id']}",
                                        headers=who)).status_code == 404
        r = await client.delete(f"/api/notifications/{cancelled['id']}", headers=SERVICE)
        assert r.status_code == 204
        for method in (client.get, client.delete):
            r = await method(f"/api/notifications/{cancelled['id']}", headers=SERVICE)
            assert r.status_code == 404
        await eventually(lambda: arrived(app, "ann", "Marker"), timeout=15)
        assert [i["title"] for i in (await inbox(app, "ann"))["items"]] == ["Marker"]
        assert await last_seq(app, "ann") == 1
        assert marker["id"] != cancelled["id"]


async def test_an_admin_deletes_anyones_sent_notification_with_its_event(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        [item] = (await post(app, 201, user_id="ann"))["items"]
        r = await app.state.client.delete(f"/api/notifications/{item['id']}",
                                          headers=auth("root", admin=True))
        assert r.status_code == 204
        assert (await inbox(app, "ann"))["items"] == []
        assert await last_seq(app, "ann") == 2  # created, deleted


async def test_get_shows_a_user_their_own_notification_and_a_service_anyones(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        [item] = (await post(app, 201, user_id="ann"))["items"]
        url = f"/api/notifications/{item['id']}"
        assert (await app.state.client.get(url, headers=auth("ann"))).json() == item
        assert (await app.state.client.get(url, headers=SERVICE)).json() == item
        assert (await app.state.client.get(url, headers=auth("bob"))).status_code == 404


async def test_the_idempotency_key_replays_the_schedule_then_what_it_created(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        body = {"user_ids": ["ann", "bob"], "title": "Once", "send_at": stamp(3),
                "idempotency_key": "once-1"}
        first = await post(app, **body)
        again = await post(app, 200, **{**body, "title": "Other"})
        assert again == first
        await eventually(lambda: arrived(app, "bob", "Once"), timeout=15)
        replay = await post(app, 200, **body)
        assert sorted(i["user_id"] for i in replay["items"]) == ["ann", "bob"]
        assert replay["suppressed"] == []
        for user in ("ann", "bob"):
            assert len((await inbox(app, user))["items"]) == 1


async def test_preferences_are_applied_when_it_is_sent(settings_env, recorder):
    async with hub(settings_env) as app:
        client = app.state.client
        for user in ("ann", "bob"):
            await client.put(f"/api/users/{user}/contact", headers=SERVICE,
                             json={"email": f"{user}@example.com"})
        made = await post(app, user_ids=["ann", "bob", "cid"], title="Prefs",
                          send_at=stamp(3), idempotency_key="prefs-1")
        assert made["user_ids"] == ["ann", "bob", "cid"]
        r = await client.patch("/api/notifications/preferences", headers=auth("bob"),
                               json={"muted": True})
        assert r.status_code == 200
        r = await client.patch("/api/notifications/preferences", headers=auth("ann"),
                               json={"types": {"grade_posted": {"email": False}}})
        assert r.status_code == 200
        await eventually(lambda: arrived(app, "cid", "Prefs"), timeout=15)
        assert await arrived(app, "ann", "Prefs") is not None
        assert await arrived(app, "bob", "Prefs") is None
        replay = await post(app, 200, user_ids=["ann"], title="x", idempotency_key="prefs-1")
        assert replay["suppressed"] == ["bob"]
        assert recorder.attempts == []  # ann turned email off; cid has no address


async def test_one_expired_before_it_is_due_is_never_sent(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        made = await post(app, user_id="ann", send_at=stamp(3600), expires_at=stamp(7200))
        # As if the hub had been down through both send_at and expires_at.
        await svc.pool.execute(
            "UPDATE scheduled_notifications SET send_at = now() - interval '2 s',"
            " expires_at = now() - interval '1 s' WHERE id = $1", made["id"])
        svc.schedule_changed.set()
        await eventually(lambda: scheduled_gone(app, made["id"]), timeout=15)
        assert (await inbox(app, "ann"))["items"] == []
        assert await last_seq(app, "ann") == 0


async def scheduled_gone(app: Any, id_: int) -> bool:
    r = await app.state.client.get(f"/api/notifications/{id_}", headers=SERVICE)
    return r.status_code == 404


async def test_a_due_row_is_created_by_the_transaction_that_takes_it_and_only_once(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        made = await post(app, user_id="ann", title="Once only", send_at=stamp(3600))
        row = {**made, "idempotency_key": None, "localized": {}}
        job = scheduled.due_job(row)
        async with svc.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            [rolled] = await notifications.create_many_in(conn, [job])
            assert isinstance(rolled, notifications.Created) and len(rolled.items) == 1
            await tx.rollback()  # a crash before the commit: nothing is lost
        assert not await scheduled_gone(app, made["id"])
        async with svc.pool.acquire() as conn, conn.transaction():
            # Leased again while its first job waited: both in one batch, created once.
            first, twice = await notifications.create_many_in(conn, [job, job])
        again = await notifications.writer(svc).submit(job)
        assert isinstance(first, notifications.Created) and len(first.items) == 1
        assert twice.items == [] and again.items == []  # type: ignore[union-attr]
        assert [i["title"] for i in (await inbox(app, "ann"))["items"]] == ["Once only"]
        assert await last_seq(app, "ann") == 1
        assert await scheduled_gone(app, made["id"])


async def test_the_admin_listing_shows_what_waits_newest_first(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        client = app.state.client
        a = await post(app, user_id="ann", send_at=stamp(3600))
        b = await post(app, user_ids=["bob", "ann"], send_at=stamp(7200))
        c = await post(app, user_id="cid", send_at=stamp(600))
        r = await client.get("/api/notifications/scheduled", headers=SERVICE)
        assert [i["id"] for i in r.json()["items"]] == [c["id"], b["id"], a["id"]]
        r = await client.get("/api/notifications/scheduled?user_id=ann&limit=1",
                             headers=SERVICE)
        assert r.json() == {"items": [b], "next_before": b["id"]}
        r = await client.get(f"/api/notifications/scheduled?user_id=ann&before={b['id']}",
                             headers=SERVICE)
        assert r.json() == {"items": [a], "next_before": None}
        assert (await client.get("/api/notifications/scheduled",
                                 headers=auth("ann"))).status_code == 403


async def test_ingest_schedules_an_entry_with_send_at(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        applier = Applier(app.state.services, "stream")
        entry = orjson.dumps({"user_id": "ann", "type": "t", "title": "From the stream",
                              "send_at": stamp(3)})
        bad = orjson.dumps({"user_id": "ann", "type": "t", "title": "x",
                            "send_at": stamp(400 * 86400)})
        outcomes = await applier([("1-0", entry), ("2-0", bad)])
        assert outcomes[0] is None
        assert outcomes[1] is not None and "send_at" in outcomes[1]
        assert (await inbox(app, "ann"))["items"] == []
        # A redelivered entry (its stream: key) schedules nothing twice.
        assert await applier([("1-0", entry)]) == [None]
        await eventually(lambda: arrived(app, "ann", "From the stream"), timeout=15)
        assert len((await inbox(app, "ann"))["items"]) == 1


async def test_the_documented_example_is_answered_as_documented(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        r = await app.state.client.post("/api/notifications", headers=SERVICE, json={
            "user_ids": ["ann", "bob"], "type": "assignment_due_soon",
            "template": "assignment_due_soon",
            "data": {"course": "Biology", "assignment": "Essay 2", "due_date": "Friday",
                     "assignment_id": 7},
            "send_at": stamp(86400), "idempotency_key": "due-soon-essay-2"})
        assert r.status_code == 202, r.text
        made = r.json()
        assert set(made) == {"id", "status", "send_at", "user_ids", "type", "title", "body",
                             "link", "data", "priority", "expires_at", "created_at", "actions"}
        assert (made["title"], made["body"], made["link"]) == (
            "Due soon: Essay 2", 'Biology: "Essay 2" is due Friday.', "/assignments/7")
        assert made["send_at"].endswith("Z") and made["created_at"].endswith("Z")


async def test_a_repeat_after_a_cancel_creates_nothing(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        body = {"user_id": "ann", "send_at": stamp(3600), "idempotency_key": "cancel-1"}
        made = await post(app, **body)
        r = await app.state.client.delete(f"/api/notifications/{made['id']}",
                                          headers=SERVICE)
        assert r.status_code == 204
        assert await post(app, 200, **body) == {"items": [], "suppressed": [],
                                                "grouped": False}
        r = await app.state.client.get("/api/notifications/scheduled", headers=SERVICE)
        assert r.json()["items"] == []


async def test_a_scheduled_template_reaches_each_recipient_in_their_language(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        await app.state.client.put("/api/users/anna/contact", headers=SERVICE,
                                   json={"locale": "de-DE"})
        made = await post(app, user_ids=["anna", "ben"], type="friend_request", title=None,
                          template="friend_request", data={"sender_name": "Zoe"},
                          send_at=stamp(3))
        assert made["title"] == "Friend request from Zoe"  # the template's own text
        german = await eventually(
            lambda: arrived(app, "anna", "Freundschaftsanfrage von Zoe"), timeout=15)
        assert german["body"] == "Zoe möchte mit dir befreundet sein."
        english = await eventually(
            lambda: arrived(app, "ben", "Friend request from Zoe"), timeout=15)
        assert english["body"] == "Zoe wants to be your friend."


async def test_a_scheduled_notification_is_sent_with_its_actions(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        made = await post(app, user_id="ann", title="Later, with buttons", send_at=stamp(3),
                          actions=[{"id": "ok", "label": "OK"}])
        buttons = [{"id": "ok", "label": "OK", "url": None, "style": "secondary"}]
        assert made["actions"] == buttons
        item = await eventually(lambda: arrived(app, "ann", "Later, with buttons"), timeout=15)
        assert item["actions"] == buttons and item["action"] is None
