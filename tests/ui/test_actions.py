"""Action buttons in the demo inbox, in a real browser (docs/client.md): rendered as text,
reachable by keyboard, chosen once, and the choice shown on every tab of the user."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from tests.conftest import auth
from tests.ui.conftest import OpenPage, notify
from tests.ui.test_inbox import XSS_IMG, badge, items, unread
from tests.waiting import eventually

pytestmark = pytest.mark.browser

BUTTONS = [{"id": "accept", "label": "Accept", "style": "primary"},
           {"id": "decline", "label": "Decline"}]


async def test_clicking_an_action_records_it_and_every_tab_shows_the_choice(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    second = await open_page("alice", context=first.context)
    made = await notify(api, "alice", type="friend_request", title="Friend request from Ada",
                        actions=BUTTONS)
    await notify(api, "alice", title="No buttons here")
    for page in (first, second):
        await expect(badge(page)).to_have_text("2")
    # Opening the bell in one tab makes them seen in every tab: look at both badges first.
    for page in (first, second):
        await page.get_by_test_id("bell").click()
        await expect(items(page)).to_have_count(2)
    # Only the notification that has actions shows buttons.
    await expect(items(first).filter(has_text="No buttons here")
                 .get_by_test_id("notification-action")).to_have_count(0)

    await first.get_by_role("button", name="Accept").click()
    for page in (first, second):
        accept = page.get_by_role("button", name="Accept")
        await expect(accept).to_have_attribute("aria-pressed", "true")
        await expect(accept).to_have_class("action-button action-primary chosen")
        await expect(page.get_by_role("button", name="Decline")).to_be_disabled()
        await expect(unread(page)).to_have_text("1")  # the bell showed them: none unseen
    response = await api.get(f"/api/notifications/{made['id']}", headers=auth("alice"))
    assert response.json()["action"]["id"] == "accept"
    assert response.json()["read"] is True
    # The chosen button says it is disabled (aria-disabled) and clicking it does nothing.
    accept = first.get_by_role("button", name="Accept")
    await expect(accept).to_be_disabled()
    await accept.click(force=True)
    await expect(first.get_by_role("button", name="Decline")).to_be_disabled()
    response = await api.get(f"/api/notifications/{made['id']}", headers=auth("alice"))
    assert response.json()["action"]["id"] == "accept"


async def test_actions_are_reachable_by_keyboard_and_render_as_text(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    await notify(api, "alice", title="Invitation", actions=[
        {"id": "join", "label": XSS_IMG}, {"id": "later", "label": "Later"}])
    await expect(badge(page)).to_have_text("1")
    await page.get_by_test_id("bell").click()
    buttons = items(page).get_by_test_id("notification-action")
    await expect(buttons).to_have_text([XSS_IMG, "Later"])
    assert await page.locator("#inbox img").count() == 0
    assert await page.evaluate("window.__xss") is None

    later = page.get_by_role("button", name="Later")
    await later.focus()
    await page.keyboard.press("Enter")
    await expect(later).to_have_attribute("aria-pressed", "true")
    await expect(later).to_be_focused()  # focus stays where it was
    await expect(badge(page)).to_be_hidden()
    # The page shows the choice at once (optimistically); the hub has it once the POST
    # it sent commits.
    async def chosen() -> str | None:
        response = await api.get("/api/notifications", headers=auth("alice"))
        action = response.json()["items"][0]["action"]
        return action["id"] if action else None

    assert await eventually(chosen) == "later"
