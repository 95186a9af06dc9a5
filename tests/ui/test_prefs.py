"""The demo page's preferences panel: a switch per channel the hub knows (in_app, email,
push, sms, webhook), for all types and per type, saved with PATCH (docs/client.md,
"The demo page")."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.conftest import API_KEY, auth
from tests.ui.conftest import OpenPage

pytestmark = pytest.mark.browser

LABELS = ["In-app", "Email", "Push", "SMS", "Webhook"]


def switch(page: Page, row: str, channel: str) -> Locator:
    return page.get_by_role("checkbox", name=f"{row}: {channel}", exact=True)


async def save(page: Page) -> None:
    await page.get_by_role("button", name="Save preferences").click()
    await expect(page.locator("#prefs-status")).to_have_text("Saved.")


async def test_every_channel_has_a_switch_for_all_types_and_for_each_type_with_the_defaults(
    open_page: OpenPage,
) -> None:
    page = await open_page("alice")
    headers = page.locator(".prefs-table thead th")
    await expect(headers).to_have_text(["Type", *LABELS])
    for row in ("All types", "Grade posted", "System announcement"):
        for channel in ("In-app", "Email"):
            await expect(switch(page, row, channel)).to_be_checked()
        for channel in ("Push", "SMS", "Webhook"):
            await expect(switch(page, row, channel)).not_to_be_checked()


async def test_sms_and_webhook_set_for_all_types_and_one_type_are_stored_and_kept_after_a_reload(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    # All types: SMS by keyboard, Webhook by pointer. The types follow.
    await switch(page, "All types", "SMS").focus()
    await page.keyboard.press("Space")
    await switch(page, "All types", "Webhook").check()
    await expect(switch(page, "Grade posted", "SMS")).to_be_checked()
    await expect(switch(page, "Friend request", "Webhook")).to_be_checked()
    # One type says otherwise.
    await switch(page, "Grade posted", "SMS").uncheck()
    await switch(page, "Grade posted", "Webhook").uncheck()
    await save(page)

    for response in (
        await api.get("/api/notifications/preferences", headers=auth("alice")),
        await api.get("/api/users/alice/preferences", headers={"X-API-Key": API_KEY}),
    ):
        assert response.status_code == 200, response.text
        stored = response.json()
        assert stored["channels"] == {
            "in_app": True, "email": True, "push": False, "sms": True, "webhook": True
        }
        assert stored["types"] == {"grade_posted": {"sms": False, "webhook": False}}

    await page.reload()
    await expect(switch(page, "All types", "SMS")).to_be_checked()
    await expect(switch(page, "All types", "Webhook")).to_be_checked()
    await expect(switch(page, "Grade posted", "SMS")).not_to_be_checked()
    await expect(switch(page, "Grade posted", "Webhook")).not_to_be_checked()
    await expect(switch(page, "Friend request", "SMS")).to_be_checked()
    await expect(switch(page, "Friend request", "Webhook")).to_be_checked()

    # Off for all types again: the types that follow go off, the one with its own
    # choice keeps it.
    await switch(page, "All types", "SMS").uncheck()
    await expect(switch(page, "Friend request", "SMS")).not_to_be_checked()
    await switch(page, "Grade posted", "Webhook").check()
    await save(page)
    stored = (await api.get("/api/notifications/preferences", headers=auth("alice"))).json()
    assert stored["channels"]["sms"] is False
    assert stored["types"] == {"grade_posted": {"sms": False, "webhook": True}}
    await page.reload()
    await expect(switch(page, "All types", "SMS")).not_to_be_checked()
    await expect(switch(page, "Friend request", "SMS")).not_to_be_checked()
    await expect(switch(page, "Grade posted", "Webhook")).to_be_checked()


async def test_saving_keeps_what_was_changed_elsewhere_since_the_page_loaded(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    await expect(switch(page, "Grade posted", "Email")).to_be_checked()
    # Meanwhile the email's unsubscribe link (or another tab) turns one type's email off.
    response = await api.patch(
        "/api/notifications/preferences",
        json={"types": {"grade_posted": {"email": False}}, "digest": "daily"},
        headers=auth("alice"),
    )
    assert response.status_code == 200, response.text

    await switch(page, "New message", "SMS").check()
    await save(page)

    stored = (await api.get("/api/notifications/preferences", headers=auth("alice"))).json()
    assert stored["types"] == {"grade_posted": {"email": False}, "new_message": {"sms": True}}
    assert stored["digest"] == "daily"
    # The page shows what the hub stored.
    await expect(switch(page, "Grade posted", "Email")).not_to_be_checked()
    await expect(page.locator("#pref-digest")).to_have_value("daily")


async def test_every_switch_is_visible_on_a_360px_screen(open_page: OpenPage) -> None:
    page = await open_page("alice", width=360, height=740)
    wrap = await page.locator(".prefs-table-wrap").bounding_box()
    assert wrap is not None
    for row in ("All types", "Study goal milestone"):
        for channel in LABELS:
            box = await switch(page, row, channel).bounding_box()
            assert box is not None
            assert wrap["x"] <= box["x"] and box["x"] + box["width"] <= wrap["x"] + wrap["width"]
    assert await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    ) == 0
