"""End to end: a notification created over REST reaches a real SMTP server (aiosmtpd on
loopback) through the hub's delivery workers, and the email's one-click unsubscribe link
stops the next one; a snoozed notification is emailed when it returns, under the
preferences of that moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import SERVICE, auth
from tests.live.conftest import LiveHub, live_hub, recv_until, ws_connect, ws_url
from tests.smtp import Recorder, smtp_server
from tests.waiting import eventually

FAST = {"delivery_backoff_seconds": 0.05, "delivery_backoff_max_seconds": 0.2,
        "delivery_poll_seconds": 0.1}
T = 20.0


def email_settings(settings_env: dict[str, Any], port: int) -> dict[str, Any]:
    return {**settings_env, **FAST, "smtp_url": f"smtp://127.0.0.1:{port}",
            "email_from": "School Hub <hub@example.com>",
            "public_url": "https://hub.example.com"}


async def create(hub: LiveHub, **body: Any) -> dict[str, Any]:
    body = {"user_id": "ann", "type": "grade_posted", "title": "Grade posted",
            "body": "Your grade for Essay 2 is A-",
            "contact": {"email": "ann@school.example"}, **body}
    response = await hub.http.post("/api/notifications", json=body, headers=SERVICE)
    assert response.status_code == 201, response.text
    return dict(response.json()["items"][0])


async def email_state(hub: LiveHub, notification_id: int) -> dict[str, Any] | None:
    response = await hub.http.get(f"/api/notifications/{notification_id}/deliveries",
                                  headers=SERVICE)
    assert response.status_code == 200, response.text
    for item in response.json()["items"]:
        if item["channel"] == "email" and item["state"] in ("sent", "failed"):
            return dict(item)
    return None


async def test_a_notification_created_over_rest_is_emailed_and_its_unsubscribe_link_works(
    settings_env,
):
    recorder = Recorder()
    async with smtp_server(recorder) as port, live_hub(**email_settings(settings_env, port)) \
            as hub:
        made = await create(hub)
        await asyncio.wait_for(recorder.arrived.wait(), T)
        [got] = recorder.messages
        assert got.rcpt_tos == ["ann@school.example"]
        msg = got.message
        assert msg["Subject"] == "Grade posted"
        assert "Your grade for Essay 2 is A-" in msg.get_body(("plain",)).get_content()
        state = await eventually(lambda: email_state(hub, made["id"]), timeout=T)
        assert state["state"] == "sent" and state["attempts"] == 1
        assert msg["Message-ID"].startswith("<delivery-")

        link = msg["List-Unsubscribe"][1:-1].removeprefix("https://hub.example.com")
        response = await hub.http.post(link, content=b"List-Unsubscribe=One-Click",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})
        assert response.status_code == 200

        later = await create(hub, title="Another grade")
        other = await create(hub, type="new_message", title="New message from bob")
        await eventually(lambda: len(recorder.messages) == 2 or None, timeout=T)
        await asyncio.sleep(1.0)  # a few worker polls: nothing more arrives
        assert [m.message["Subject"] for m in recorder.messages] == [
            "Grade posted", "New message from bob"]
        assert await email_state(hub, later["id"]) is None
        assert (await email_state(hub, other["id"]) or {}).get("state") == "sent"


async def test_a_recipient_the_server_refuses_with_550_fails_at_once_with_the_reply(
    settings_env,
):
    recorder = Recorder(rcpt_reply="550 5.1.1 mailbox unavailable")
    async with smtp_server(recorder) as port, live_hub(**email_settings(settings_env, port)) \
            as hub:
        made = await create(hub)
        state = await eventually(lambda: email_state(hub, made["id"]), timeout=T)
        assert state["state"] == "failed" and state["attempts"] == 1
        assert "550" in state["last_error"] and "mailbox unavailable" in state["last_error"]


async def test_a_snoozed_notification_is_emailed_when_it_returns_unless_its_type_is_muted(
    settings_env,
):
    recorder = Recorder()
    async with smtp_server(recorder) as port, live_hub(**email_settings(settings_env, port)) \
            as hub, ws_connect(ws_url(hub.url, "ann")) as ws:
        await recv_until(ws, "hello")
        # ann turns email off for grades and messages: created now, neither is emailed.
        r = await hub.http.patch("/api/notifications/preferences", headers=auth("ann"), json={
            "types": {"grade_posted": {"email": False}, "new_message": {"email": False}}})
        assert r.status_code == 200, r.text
        reminder = await create(hub, type="reminder", title="Reminder")
        grade = await create(hub)
        message = await create(hub, type="new_message", title="New message from bob")
        await asyncio.wait_for(recorder.arrived.wait(), T)
        assert [m.message["Subject"] for m in recorder.messages] == ["Reminder"]
        await eventually(lambda: email_state(hub, reminder["id"]), timeout=T)
        assert await deliveries(hub, grade["id"]) == []

        async def snooze(seconds: float) -> None:
            until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
            for note in (reminder, grade, message):
                r = await hub.http.post(f"/api/notifications/{note['id']}/snooze",
                                        json={"until": until}, headers=auth("ann"))
                assert r.status_code == 200, r.text

        await snooze(3600)
        # While they are away, she turns grades back on; messages stay off.
        r = await hub.http.patch("/api/notifications/preferences", headers=auth("ann"),
                                 json={"types": {"grade_posted": {"email": True}}})
        assert r.status_code == 200, r.text
        assert await deliveries(hub, grade["id"]) == []  # nothing until it returns
        await snooze(1)  # snoozing again moves the time

        returned = {(await recv_until(ws, "notification.unsnoozed"))["data"]["notification"]
                    ["id"] for _ in range(3)}
        assert returned == {reminder["id"], grade["id"], message["id"]}
        # Decided in the transaction that returned them: there when the event is.
        assert [d["channel"] for d in await deliveries(hub, grade["id"])] == ["email"]
        assert [d["channel"] for d in await deliveries(hub, reminder["id"])] == ["email"]
        assert await deliveries(hub, message["id"]) == []
        await eventually(lambda: len(recorder.messages) == 3 or None, timeout=T)
        assert sorted(m.message["Subject"] for m in recorder.messages[1:]) == [
            "Grade posted", "Reminder"]
        for note in (grade, reminder):
            state = await eventually(lambda n=note: email_state(hub, n["id"]), timeout=T)
            assert state["attempts"] == 1
        # The muted one never goes out: a later email arrives, and it alone.
        await create(hub, type="reminder", title="Later")
        await eventually(lambda: len(recorder.messages) == 4 or None, timeout=T)
        assert recorder.messages[3].message["Subject"] == "Later"


async def deliveries(hub: LiveHub, notification_id: int) -> list[dict[str, Any]]:
    response = await hub.http.get(f"/api/notifications/{notification_id}/deliveries",
                                  headers=SERVICE)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
