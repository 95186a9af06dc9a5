"""Cross-device dismissal (docs/delivery.md, "Cross-device dismissal"): reading a
notification closes its web push on the user's devices. A hub on loopback, its delivery
workers, PostgreSQL and a push service on loopback that decrypts what it gets, all real.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from tests.conftest import SERVICE, auth
from tests.hub.pushservice import Push, PushService, push_service
from tests.hub.test_quiet_hours import window_around_now
from tests.live.conftest import LiveHub, live_hub, recv_until, ws_connect
from tests.live.test_push_delivery import create, push_settings, subscribe_with_push_on
from tests.waiting import eventually

T = 20.0


async def deliveries(hub: LiveHub, notification_id: int) -> dict[str, dict[str, Any]]:
    r = await hub.http.get(f"/api/notifications/{notification_id}/deliveries",
                           headers=SERVICE)
    assert r.status_code == 200, r.text
    return {d["channel"]: d for d in r.json()["items"]}


async def sent(hub: LiveHub, notification_id: int, channel: str) -> bool:
    row = (await deliveries(hub, notification_id)).get(channel)
    return row is not None and row["state"] == "sent"


def dismissals(service: PushService) -> list[Push]:
    return [p for p in service.received
            if p.plaintext and orjson.loads(p.plaintext).get("type") == "dismiss"]


async def mark_read(hub: LiveHub, user: str, ids: list[int]) -> None:
    r = await hub.http.post("/api/notifications/mark-read", json={"ids": ids},
                            headers=auth(user))
    assert r.status_code == 200, r.text


async def test_reading_a_sent_push_sends_a_dismissal_with_its_topic_to_every_device(
    settings_env,
):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        r = await hub.http.post("/api/push/subscriptions",
                                json=service.browser("ann-laptop"), headers=auth("ann"))
        assert r.status_code == 201, r.text
        made = await create(hub, priority="high")
        await service.wait(2, timeout=T)
        await eventually(lambda: sent(hub, made["id"], "push"), timeout=T)

        await mark_read(hub, "ann", [made["id"]])
        pushes = await service.wait(4, timeout=T)
        gone = pushes[2:]
        assert sorted(p.name for p in gone) == ["ann-laptop", "ann-phone"]
        for push in gone:
            assert push.error is None, push.error
            assert orjson.loads(push.plaintext or b"") == {"type": "dismiss", "id": made["id"]}
            assert push.headers["topic"] == f"n{made['id']}"
            assert push.headers["urgency"] == "normal"
            assert 0 < int(push.headers["ttl"]) <= 3600
        await eventually(lambda: sent(hub, made["id"], "push.dismiss"), timeout=T)
        # Reading it again changes nothing, so nothing more is pushed.
        await mark_read(hub, "ann", [made["id"]])
        rows = await deliveries(hub, made["id"])
        assert rows["push.dismiss"]["attempts"] == 1
        assert len(service.received) == 4


@pytest.mark.parametrize("held_by", ["escalation", "quiet hours"])
async def test_reading_a_push_not_yet_sent_skips_it_and_pushes_nothing(
    settings_env, held_by
):
    settings = push_settings(settings_env)
    if held_by == "escalation":
        settings.update(escalate_types=["grade_posted"], escalate_after_seconds=300)
    async with push_service() as service, live_hub(**settings) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        if held_by == "quiet hours":
            start, end = window_around_now("UTC", timedelta(hours=1), timedelta(hours=1))
            r = await hub.http.patch(
                "/api/notifications/preferences", headers=auth("ann"),
                json={"quiet_hours": {"start": start, "end": end, "timezone": "UTC"}})
            assert r.status_code == 200, r.text
        made = await create(hub)
        before = (await deliveries(hub, made["id"]))["push"]
        assert before["state"] == ("held" if held_by == "quiet hours" else "scheduled")

        await mark_read(hub, "ann", [made["id"]])
        rows = await deliveries(hub, made["id"])
        assert set(rows) == {"push"}  # no dismissal: nothing was shown
        assert rows["push"]["state"] == "skipped"
        assert rows["push"]["last_error"] == "read in-app"
        assert rows["push"]["attempts"] == 0
        # Even once it would have been due, nothing is claimed or pushed.
        await hub.svc.pool.execute(
            "UPDATE deliveries SET next_attempt_at = now() WHERE notification_id = $1",
            made["id"])
        # A later push (another type, high priority: neither delayed nor held) does go.
        other = await create(hub, type="new_comment", title="Another", priority="high")
        [push] = await service.wait(1, timeout=T)
        assert orjson.loads(push.plaintext or b"")["id"] == other["id"]
        await eventually(lambda: sent(hub, other["id"], "push"), timeout=T)
        assert len(service.received) == 1
        assert (await deliveries(hub, made["id"]))["push"]["state"] == "skipped"


async def test_mark_all_read_dismisses_every_sent_push_of_that_user_only(settings_env):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        await subscribe_with_push_on(hub, "bob", service.browser("bob-phone"))
        first = await create(hub, title="One")
        second = await create(hub, title="Two")
        bobs = await create(hub, user_id="bob", title="Bob's")
        for n in (first, second, bobs):
            await eventually(lambda n=n: sent(hub, n["id"], "push"), timeout=T)

        r = await hub.http.post("/api/notifications/mark-all-read", headers=auth("ann"))
        assert r.status_code == 200, r.text
        assert r.json()["updated"] == 2
        for n in (first, second):
            await eventually(lambda n=n: sent(hub, n["id"], "push.dismiss"), timeout=T)
        gone = dismissals(service)
        assert sorted((p.name, p.headers["topic"], orjson.loads(p.plaintext or b"")["id"])
                      for p in gone) == sorted([
            ("ann-phone", f"n{first['id']}", first["id"]),
            ("ann-phone", f"n{second['id']}", second["id"])])
        assert "push.dismiss" not in await deliveries(hub, bobs["id"])


async def test_a_push_waiting_for_a_retry_when_read_is_skipped_and_dismissed_where_shown(
    settings_env,
):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        r = await hub.http.post("/api/push/subscriptions",
                                json=service.browser("ann-laptop"), headers=auth("ann"))
        assert r.status_code == 201, r.text
        # The phone shows it; the laptop's push service asks to come back in 60 s.
        service.answers["ann-laptop"] = (503, {"Retry-After": "60"})
        made = await create(hub)

        async def retrying() -> dict[str, Any] | None:
            row = (await deliveries(hub, made["id"]))["push"]
            return row if row["last_error"] and row["claimed_until"] is None else None

        row = await eventually(retrying, timeout=T)
        assert (row["state"], row["attempts"]) == ("scheduled", 1)
        service.answers["ann-laptop"] = (201, {})

        await mark_read(hub, "ann", [made["id"]])
        rows = await deliveries(hub, made["id"])
        assert (rows["push"]["state"], rows["push"]["last_error"]) == ("skipped", "read in-app")
        await eventually(lambda: sent(hub, made["id"], "push.dismiss"), timeout=T)
        assert sorted(p.name for p in dismissals(service)) == ["ann-laptop", "ann-phone"]
        assert len(service.received) == 4  # the push itself was not tried again


async def test_reading_over_the_websocket_dismisses_the_push_too(settings_env):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        made = await create(hub)
        await eventually(lambda: sent(hub, made["id"], "push"), timeout=T)
        async with ws_connect(hub.ws_url("ann")) as ws:
            await ws.send(orjson.dumps({"type": "notifications.mark_read", "client_id": "r1",
                                        "data": {"ids": [made["id"]]}}).decode())
            await recv_until(ws, "ack")
        await eventually(lambda: sent(hub, made["id"], "push.dismiss"), timeout=T)
        [gone] = dismissals(service)
        assert orjson.loads(gone.plaintext or b"") == {"type": "dismiss", "id": made["id"]}
        assert gone.headers["topic"] == f"n{made['id']}"


async def test_a_push_that_failed_after_reaching_some_devices_is_dismissed_there(
    settings_env,
):
    """The phone's push service accepts the push, the laptop's keeps answering 503 until
    the attempts run out: the push ends ``failed``, and reading it later still closes it
    on the phone."""
    settings = {**push_settings(settings_env), "delivery_max_attempts": 2}
    async with push_service() as service, live_hub(**settings) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        r = await hub.http.post("/api/push/subscriptions",
                                json=service.browser("ann-laptop"), headers=auth("ann"))
        assert r.status_code == 201, r.text
        service.answers["ann-laptop"] = (503, {})
        made = await create(hub)

        async def failed() -> dict[str, Any] | None:
            row = (await deliveries(hub, made["id"]))["push"]
            return row if row["state"] == "failed" else None

        row = await eventually(failed, timeout=T)
        assert row["attempts"] == 2 and "503" in row["last_error"]
        assert row["sent_at"] is not None  # when the phone's push service first took it
        tried = len(service.received)
        assert tried == 4  # both browsers, twice
        service.answers["ann-laptop"] = (201, {})

        await mark_read(hub, "ann", [made["id"]])
        await eventually(lambda: sent(hub, made["id"], "push.dismiss"), timeout=T)
        assert sorted(p.name for p in dismissals(service)) == ["ann-laptop", "ann-phone"]
        assert len(service.received) == tried + 2  # the push itself is not tried again


async def test_a_push_that_reached_no_device_is_not_dismissed(settings_env):
    """Every attempt answered 503 (the push ended ``failed``), or the push was read while
    waiting for a retry after reaching nobody: no browser shows it, so none is sent a
    dismissal (a silent push that would show nothing)."""
    settings = {**push_settings(settings_env), "delivery_max_attempts": 2}
    async with push_service() as service, live_hub(**settings) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        service.answers["ann-phone"] = (503, {})
        failed_push = await create(hub, title="Never shown")

        async def state(n: int, wanted: str) -> dict[str, Any] | None:
            row = (await deliveries(hub, n))["push"]
            return row if row["state"] == wanted else None

        row = await eventually(lambda: state(failed_push["id"], "failed"), timeout=T)
        assert row["sent_at"] is None
        await mark_read(hub, "ann", [failed_push["id"]])
        assert set(await deliveries(hub, failed_push["id"])) == {"push"}

        service.answers["ann-phone"] = (503, {"Retry-After": "60"})
        waiting = await create(hub, title="Waiting")

        async def retrying() -> dict[str, Any] | None:
            row = (await deliveries(hub, waiting["id"]))["push"]
            return row if row["last_error"] and row["claimed_until"] is None else None

        await eventually(retrying, timeout=T)
        tried = len(service.received)
        await mark_read(hub, "ann", [waiting["id"]])

        async def dismissal_settled() -> dict[str, Any] | None:
            row = (await deliveries(hub, waiting["id"])).get("push.dismiss")
            return row if row is not None and row["state"] == "skipped" else None

        row = await eventually(dismissal_settled, timeout=T)
        assert row["last_error"] == "the push reached no device"
        assert len(service.received) == tried and dismissals(service) == []
