"""End to end: a notification created over REST reaches a push service on loopback through
the hub's delivery workers, encrypted for the browser that subscribed over REST; a
subscription the push service says is gone is deleted and the delivery fails at once."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import SERVICE, auth
from tests.hub.pushservice import push_service
from tests.hub.test_push import SUBJECT, raw_key
from tests.live.conftest import LiveHub, live_hub
from tests.waiting import eventually

FAST = {"delivery_backoff_seconds": 0.05, "delivery_backoff_max_seconds": 0.2,
        "delivery_poll_seconds": 0.1}
T = 20.0


def push_settings(settings_env: dict[str, Any]) -> dict[str, Any]:
    return {**settings_env, **FAST, "vapid_private_key": raw_key(),
            "vapid_subject": SUBJECT, "push_allow_http_loopback": True}


async def subscribe_with_push_on(hub: LiveHub, user: str, subscription: dict[str, Any]) -> None:
    r = await hub.http.post("/api/push/subscriptions", json=subscription, headers=auth(user))
    assert r.status_code == 201, r.text
    # Push is off by default in the preferences (docs/delivery.md, "Channels").
    r = await hub.http.patch("/api/notifications/preferences",
                             json={"channels": {"push": True}}, headers=auth(user))
    assert r.status_code == 200, r.text


async def create(hub: LiveHub, **body: Any) -> dict[str, Any]:
    body = {"user_id": "ann", "type": "grade_posted", "title": "Grade posted",
            "body": "Your grade for Essay 2 is A-", "link": "/grades/5", **body}
    r = await hub.http.post("/api/notifications", json=body, headers=SERVICE)
    assert r.status_code == 201, r.text
    return dict(r.json()["items"][0])


async def push_state(hub: LiveHub, notification_id: int) -> dict[str, Any] | None:
    r = await hub.http.get(f"/api/notifications/{notification_id}/deliveries", headers=SERVICE)
    assert r.status_code == 200, r.text
    for item in r.json()["items"]:
        if item["channel"] == "push" and item["state"] in ("sent", "failed"):
            return dict(item)
    return None


async def test_a_notification_created_over_rest_is_pushed_to_the_users_browser(settings_env):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        made = await create(hub, priority="high")
        [push] = await service.wait(1, timeout=T)
        assert push.error is None, push.error
        assert orjson.loads(push.plaintext or b"") == {
            "id": made["id"], "type": "grade_posted", "title": "Grade posted",
            "body": "Your grade for Essay 2 is A-", "link": "/grades/5", "priority": "high"}
        assert push.headers["topic"] == f"n{made['id']}"
        assert push.headers["urgency"] == "high"
        assert push.claims is not None and push.claims["aud"] == service.url
        state = await eventually(lambda: push_state(hub, made["id"]), timeout=T)
        assert state["state"] == "sent" and state["attempts"] == 1


async def test_a_subscription_gone_at_the_push_service_is_deleted_and_fails_at_once(
    settings_env,
):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-old-phone"))
        service.answers["ann-old-phone"] = (410, {})
        made = await create(hub)
        state = await eventually(lambda: push_state(hub, made["id"]), timeout=T)
        assert state["state"] == "failed" and state["attempts"] == 1
        assert state["last_error"] == "subscription gone"
        left = await hub.svc.pool.fetchval("SELECT count(*) FROM push_subscriptions")
        assert left == 0
        # Without a subscription, the next notification schedules no push at all.
        later = await create(hub, title="Another grade")
        r = await hub.http.get(f"/api/notifications/{later['id']}/deliveries",
                               headers=SERVICE)
        assert [i for i in r.json()["items"] if i["channel"] == "push"] == []


async def test_a_push_service_error_is_retried_until_it_is_accepted(settings_env):
    async with push_service() as service, live_hub(**push_settings(settings_env)) as hub:
        await subscribe_with_push_on(hub, "ann", service.browser("ann-phone"))
        service.answers["ann-phone"] = (503, {})
        made = await create(hub)
        await service.wait(2, timeout=T)
        service.answers["ann-phone"] = (201, {})
        state = await eventually(lambda: push_state(hub, made["id"]), timeout=T)
        assert state["state"] == "sent" and state["attempts"] >= 3
