"""The page's live connection: surviving a hub restart, and the SSE transport."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from hub import notifications
from hub.models import NotificationCreate
from tests.conftest import API_KEY, auth, running_app
from tests.ui.conftest import Console, HubServer, OpenPage, notify

pytestmark = pytest.mark.browser

#: What Chromium logs by itself while the hub is down on purpose.
REFUSED = r"WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED"


async def test_page_reconnects_after_a_hub_restart_and_shows_the_missed_notification_once(
    open_page: OpenPage, hub: HubServer, settings_env: dict[str, Any], console: Console
) -> None:
    console.allow(REFUSED)
    page = await open_page("alice", fake_clock=True)
    status = page.get_by_test_id("connection-status")
    badge = page.get_by_test_id("unread-count")
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as api:
        await notify(api, "alice", title="Before the restart")
    await expect(badge).to_have_text("1")
    await page.get_by_test_id("bell").click()
    await expect(page.get_by_test_id("notification-item")).to_have_count(1)

    await hub.stop()
    await expect(status).to_have_text("reconnecting")
    # Created while no hub is running: only the database knows about it.
    async with running_app(**settings_env) as down:
        await notifications.create(
            down.state.services,
            NotificationCreate(user_id="alice", type="grade_posted", title="While you were away"),
        )
    await hub.start()
    # Skip whatever backoff delay the page is in; the reconnect itself is real.
    await page.clock.fast_forward(30_000)
    await expect(status).to_have_text("connected")

    items = page.get_by_test_id("notification-item").locator(".item-title")
    await expect(items).to_have_text(["While you were away", "Before the restart"])
    await expect(badge).to_have_text("2")
    # Still exactly once after another live event proves the stream is in step.
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as api:
        await notify(api, "alice", title="After the restart")
    await expect(items).to_have_text(
        ["After the restart", "While you were away", "Before the restart"]
    )
    await expect(badge).to_have_text("3")


async def test_page_works_over_server_sent_events(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    alice = await open_page("alice", fragment="&transport=sse")
    bob = await open_page("bob")
    assert await alice.get_by_test_id("connection-status").get_attribute("title") == (
        "Live over SSE"
    )
    await notify(api, "alice", title="Over SSE")
    await expect(alice.get_by_test_id("unread-count")).to_have_text("1")

    # Without a WebSocket the page sends over REST and still sees both directions.
    await alice.get_by_test_id("chat-recipient").fill("bob")
    await alice.get_by_test_id("chat-recipient").press("Enter")
    await alice.get_by_test_id("chat-input").fill("sent over REST")
    await alice.get_by_test_id("chat-input").press("Enter")
    await bob.get_by_test_id("chat-recipient").fill("alice")
    await bob.get_by_test_id("chat-recipient").press("Enter")
    await expect(bob.get_by_test_id("chat-message")).to_have_text(["sent over REST"])
    await bob.get_by_test_id("chat-input").fill("received over SSE")
    await bob.get_by_test_id("chat-send").click()
    await expect(alice.get_by_test_id("chat-message")).to_have_text(
        ["sent over REST", "received over SSE"]
    )
    await expect(alice.locator(".message.mine .receipt")).to_have_text(["Read"])


async def test_announcements_appear_and_disappear_live(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    admin = auth("ops", admin=True)
    response = await api.post(
        "/api/announcements",
        json={"title": "Maintenance tonight", "body": "From 22:00 UTC.", "level": "warning"},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    page = await open_page("alice")
    banner = page.locator(".announcement")
    await expect(banner).to_have_text(["Maintenance tonight From 22:00 UTC.×"])

    payload = "<img src=x onerror=window.__xss=1>"
    response = await api.post(
        "/api/announcements", json={"title": payload, "level": "critical"}, headers=admin
    )
    assert response.status_code == 201
    second = response.json()["id"]
    await expect(banner).to_have_count(2)
    await expect(banner.first.locator("strong")).to_have_text(payload)
    assert await page.locator(".announcements img").count() == 0

    response = await api.delete(f"/api/announcements/{second}", headers=admin)
    assert response.status_code == 204
    await expect(banner).to_have_count(1)
    await page.get_by_role("button", name="Dismiss announcement: Maintenance tonight").click()
    await expect(banner).to_have_count(0)
    assert await page.evaluate("window.__xss") is None


async def test_preferences_are_saved_and_suppress_notifications(
    open_page: OpenPage, api: httpx.AsyncClient, console: Console
) -> None:
    console.allow(r"status of 422")  # Chromium logs the refused save below
    page = await open_page("alice")
    box = page.get_by_role("checkbox", name="Grade posted: In-app")
    await expect(box).to_be_checked()
    await box.uncheck()
    await page.get_by_role("checkbox", name="Friend request: Push").check()
    await page.locator("#pref-quiet").check()
    await page.locator("#pref-quiet-start").fill("21:30")
    await page.locator("#pref-quiet-tz").fill("Europe/Berlin")
    await page.locator("#pref-digest").select_option("daily")
    await page.get_by_role("button", name="Save preferences").click()
    await expect(page.locator("#prefs-status")).to_have_text("Saved.")

    stored = (await api.get("/api/notifications/preferences", headers=auth("alice"))).json()
    assert stored["types"] == {"grade_posted": {"in_app": False}, "friend_request": {"push": True}}
    assert stored["quiet_hours"] == {"start": "21:30", "end": "07:00", "timezone": "Europe/Berlin"}
    assert stored["digest"] == "daily"
    body = {"user_id": "alice", "type": "grade_posted", "title": "Hidden"}
    response = await api.post("/api/notifications", json=body, headers={"X-API-Key": API_KEY})
    assert response.json()["suppressed"] == ["alice"]

    await page.reload()
    await expect(page.get_by_role("checkbox", name="Grade posted: In-app")).not_to_be_checked()
    await expect(page.locator("#pref-digest")).to_have_value("daily")

    await page.locator("#pref-quiet-tz").fill("Mars/Olympus")
    await page.get_by_role("button", name="Save preferences").click()
    await expect(page.locator("#prefs-status")).to_contain_text("Not saved")

