"""Escalate only when unseen (docs/delivery.md, "Escalate when unseen"): the email, push
and SMS deliveries of the types in ``HUB_ESCALATE_TYPES`` wait
``HUB_ESCALATE_AFTER_SECONDS``, and are skipped if the notification was read meanwhile.

The hub, its workers and PostgreSQL are real; the channels are
``tests.hub.recording_channel.Recorder``. The delay is driven by moving the stored
row's ``next_attempt_at`` to now, never by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db import deliveries as store
from hub import delivery, preferences
from hub.models import Preferences
from tests.conftest import SERVICE, auth
from tests.hub.recording_channel import Recorder
from tests.hub.test_delivery import create, deliveries_of, hub
from tests.hub.test_quiet_hours import window_around_now
from tests.waiting import eventually

ESCALATE = {"escalate_types": ["grade_posted"], "escalate_after_seconds": 300}


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> dict[str, Recorder]:
    recs = {name: Recorder(name=name) for name in ("email", "webhook")}
    monkeypatch.setattr(delivery, "REGISTRY", recs)
    return recs


async def setup_user(app: Any, user: str = "ann", **prefs: Any) -> None:
    r = await app.state.client.put(f"/api/users/{user}/contact",
                                   json={"email": f"{user}@example.com"}, headers=SERVICE)
    assert r.status_code == 200, r.text
    doc = {"channels": {"email": True, "webhook": True}, **prefs}
    await preferences.put(app.state.services, user, Preferences.load(doc))


def by_channel(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["channel"]: d for d in rows}


async def due_now(app: Any, notification_id: int) -> None:
    await app.state.services.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() WHERE notification_id = $1",
        notification_id)


async def finished(app: Any, n: int, channel: str) -> dict[str, Any] | None:
    row = by_channel(await deliveries_of(app, n))[channel]
    return row if row["state"] in ("sent", "skipped", "failed") else None


async def test_an_escalated_types_email_waits_the_delay_and_others_go_at_once(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0, **ESCALATE) as app:
        await setup_user(app)
        made = await create(app, user_id="ann", type="grade_posted")
        item = made["items"][0]
        rows = by_channel(await deliveries_of(app, item["id"]))
        created = datetime.fromisoformat(item["created_at"])
        due = datetime.fromisoformat(rows["email"]["next_attempt_at"])
        assert rows["email"]["state"] == "scheduled"
        assert abs(due - (created + timedelta(seconds=300))) < timedelta(seconds=5)
        # A webhook is a machine: never delayed.
        assert datetime.fromisoformat(rows["webhook"]["next_attempt_at"]) < created + \
            timedelta(seconds=5)
        # Another type: at once.
        other = await create(app, user_id="ann", type="friend_request", title="Hi")
        row = by_channel(await deliveries_of(app, other["items"][0]["id"]))["email"]
        assert datetime.fromisoformat(row["next_attempt_at"]) < created + timedelta(seconds=5)


async def test_read_in_app_before_the_delay_means_no_email_at_all(settings_env, channels):
    async with hub(settings_env, **ESCALATE) as app:
        await setup_user(app)
        made = await create(app, user_id="ann", type="grade_posted")
        n = made["items"][0]["id"]
        r = await app.state.client.post("/api/notifications/mark-read", json={"ids": [n]},
                                        headers=auth("ann"))
        assert r.status_code == 200, r.text
        await due_now(app, n)
        row = await eventually(lambda: finished(app, n, "email"))
        assert row["state"] == "skipped" and row["last_error"] == "read in-app"
        assert channels["email"].attempts == []
        # The webhook went regardless.
        assert (await eventually(lambda: finished(app, n, "webhook")))["state"] == "sent"


async def test_unread_after_the_delay_the_email_is_sent(settings_env, channels):
    async with hub(settings_env, **ESCALATE) as app:
        await setup_user(app)
        made = await create(app, user_id="ann", type="grade_posted")
        n = made["items"][0]["id"]
        await eventually(lambda: finished(app, n, "webhook"))
        assert channels["email"].attempts == []  # not before the delay
        await due_now(app, n)
        row = await eventually(lambda: finished(app, n, "email"))
        assert row["state"] == "sent"
        assert [d.notification["id"] for d in channels["email"].sent] == [n]


async def test_quiet_hours_are_judged_at_the_end_of_the_delay(settings_env, channels):
    zone = "Europe/Berlin"
    # A window that starts 2 minutes from now: the commit is outside it, the escalation
    # (5 minutes later) inside, so the email is held until the window's end.
    start, end = window_around_now(zone, -timedelta(minutes=2), timedelta(hours=1))
    async with hub(settings_env, delivery_workers=0, **ESCALATE) as app:
        await setup_user(app, quiet_hours={"start": start, "end": end, "timezone": zone})
        made = await create(app, user_id="ann", type="grade_posted")
        rows = by_channel(await deliveries_of(app, made["items"][0]["id"]))
        assert rows["email"]["state"] == "held"
        assert rows["webhook"]["state"] == "scheduled"


def test_escalate_types_are_read_comma_separated_from_the_environment(monkeypatch):
    from hub.settings import Settings

    monkeypatch.setenv("HUB_ESCALATE_TYPES", "grade_posted, new_comment,")
    monkeypatch.setenv("HUB_ESCALATE_AFTER_SECONDS", "60")
    s = Settings()
    assert s.escalate_types == ["grade_posted", "new_comment"]
    assert s.escalate_after_seconds == 60
    assert Settings.model_fields["escalate_after_seconds"].default == 300


async def test_a_snooze_skips_the_waiting_email_and_its_return_decides_it_again(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0, **ESCALATE) as app:
        await setup_user(app)
        [item] = (await create(app, user_id="ann", type="grade_posted"))["items"]
        # A worker is sending its webhook right now (a live claim); its email waits.
        [claimed] = await store.claim(app.state.services.pool, ["webhook"], 10, 600)
        assert claimed["notification"]["id"] == item["id"]

        async def snooze(seconds: float) -> None:
            until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
            r = await app.state.client.post(f"/api/notifications/{item['id']}/snooze",
                                            json={"until": until}, headers=auth("ann"))
            assert r.status_code == 200, r.text

        async def states() -> dict[str, tuple[str, int, str | None]]:
            rows = by_channel(await deliveries_of(app, item["id"]))
            return {c: (d["state"], d["attempts"], d["last_error"]) for c, d in rows.items()}

        await snooze(3600)
        assert await states() == {"email": ("skipped", 0, "snoozed"),
                                  "webhook": ("scheduled", 1, None)}  # its send goes on

        await snooze(0.5)  # snoozing again moves the time; the scheduler returns it

        async def back() -> bool:
            r = await app.state.client.get("/api/notifications/unread-count",
                                           headers=auth("ann"))
            return bool(r.json()["count"] == 1)

        await eventually(back)
        # Decided again as new: the skipped email makes room and waits the escalation
        # delay again from the return; the webhook being sent stands for its channel.
        assert await states() == {"email": ("scheduled", 0, None),
                                  "webhook": ("scheduled", 1, None)}
        email = by_channel(await deliveries_of(app, item["id"]))["email"]
        wait = (datetime.fromisoformat(email["next_attempt_at"])
                - datetime.fromisoformat(email["created_at"]))
        assert abs(wait - timedelta(seconds=300)) < timedelta(seconds=5)


async def _claimed_then_snoozed(app: Any, item: dict[str, Any]) -> dict[str, Any]:
    """The webhook claimed by a worker that died while sending it (a 1 s lease, live at
    the snooze, which lets it be), the notification snoozed for an hour, and the retry
    a worker claims once the lease ended."""
    pool = app.state.services.pool
    [first] = await store.claim(pool, ["webhook"], 10, 1)
    assert first["snoozed"] is False
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await app.state.client.post(f"/api/notifications/{item['id']}/snooze",
                                    json={"until": until}, headers=auth("ann"))
    assert r.status_code == 200, r.text
    [retry] = await eventually(lambda: store.claim(pool, ["webhook"], 10, 600))
    assert (retry["delivery_id"], retry["snoozed"]) == (first["delivery_id"], True)
    return retry  # type: ignore[no-any-return]


async def test_a_retry_claimed_while_the_notification_is_snoozed_is_skipped_unsent(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0, **ESCALATE) as app:
        await setup_user(app)
        [item] = (await create(app, user_id="ann", type="grade_posted"))["items"]
        retry = await _claimed_then_snoozed(app, item)
        await delivery.Workers.build(app.state.services)._send(retry)
        webhook = by_channel(await deliveries_of(app, item["id"]))["webhook"]
        assert (webhook["state"], webhook["last_error"]) == ("skipped", "snoozed")
        assert channels["webhook"].attempts == []


async def test_a_retry_whose_notification_came_back_meanwhile_is_released_not_skipped(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0, **ESCALATE) as app:
        await setup_user(app)
        [item] = (await create(app, user_id="ann", type="grade_posted"))["items"]
        retry = await _claimed_then_snoozed(app, item)
        # It comes back between the claim and the outcome: its return lets the claimed
        # webhook stand for its channel, so skipping it now would lose the webhook.
        until = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        r = await app.state.client.post(f"/api/notifications/{item['id']}/snooze",
                                        json={"until": until}, headers=auth("ann"))
        assert r.status_code == 200, r.text

        async def back() -> bool:
            r = await app.state.client.get("/api/notifications/unread-count",
                                           headers=auth("ann"))
            return bool(r.json()["count"] == 1)

        await eventually(back)
        await delivery.Workers.build(app.state.services)._send(retry)
        webhook = by_channel(await deliveries_of(app, item["id"]))["webhook"]
        assert (webhook["state"], webhook["attempts"]) == ("scheduled", retry["attempts"] - 1)
        assert channels["webhook"].attempts == []
        # Due at once: the next claim takes it, and this time it is not snoozed.
        [again] = await store.claim(app.state.services.pool, ["webhook"], 10, 600)
        assert (again["delivery_id"], again["snoozed"]) == (retry["delivery_id"], False)
