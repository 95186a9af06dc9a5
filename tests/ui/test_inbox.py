"""The bell, its badge and the inbox in a real browser, driven by the hub's API."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.conftest import API_KEY, auth
from tests.ui.conftest import DOCS_IMG, HubServer, OpenPage, notify

pytestmark = pytest.mark.browser

UNREAD = re.compile(r"\bunread\b")
XSS_IMG = "<img src=x onerror=window.__xss=1>"
XSS_SCRIPT = "<script>window.__xss=2</script>"


def badge(page: Page):  # noqa: ANN201 - a Playwright Locator
    """The bell's badge: how many are unseen."""
    return page.get_by_test_id("unseen-count")


def unread(page: Page):  # noqa: ANN201
    """The dialog's unread count."""
    return page.get_by_test_id("unread-count")


def items(page: Page):  # noqa: ANN201
    return page.get_by_test_id("notification-item")


async def test_badge_updates_live_when_a_notification_is_created(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    await expect(badge(page)).to_be_hidden()
    await notify(api, "alice", title="Essay graded")
    await expect(badge(page)).to_have_text("1")
    await expect(badge(page)).to_be_visible()
    await expect(page.locator("#live-region")).to_have_text("New notification: Essay graded")
    await notify(api, "bob", title="Not for alice")
    await notify(api, "alice", title="Quiz graded")
    await expect(badge(page)).to_have_text("2")
    await page.get_by_test_id("bell").click()
    await expect(items(page).locator(".item-title")).to_have_text(["Quiz graded", "Essay graded"])
    # Shown, so seen: the badge clears; they stay unread.
    await expect(badge(page)).to_be_hidden()
    await expect(unread(page)).to_have_text("2")


async def test_marking_read_in_one_tab_updates_the_badge_in_another_tab(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    second = await open_page("alice", context=first.context)
    for title in ["One", "Two", "Three"]:
        await notify(api, "alice", title=title)
    for page in (first, second):
        await expect(badge(page)).to_have_text("3")

    await first.get_by_test_id("bell").click()
    await first.get_by_role("button", name="Mark as read: Two").click()
    for page in (first, second):
        await expect(unread(page)).to_have_text("2")
    await expect(items(first).filter(has_text="Two")).not_to_have_class(UNREAD)

    await second.get_by_test_id("bell").click()
    await expect(items(second).filter(has_text="Two")).not_to_have_class(UNREAD)
    await second.get_by_role("button", name="Mark all read").click()
    for page in (first, second):
        await expect(unread(page)).to_have_text("0")
        await expect(badge(page)).to_be_hidden()
    await expect(first.locator(".item.unread")).to_have_count(0)


async def test_deleting_an_unread_notification_lowers_the_badge_everywhere(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    second = await open_page("alice", context=first.context)
    await notify(api, "alice", title="Keep me")
    await notify(api, "alice", title="Delete me")
    await first.get_by_test_id("bell").click()
    await second.get_by_test_id("bell").click()
    await expect(items(second)).to_have_count(2)
    await first.get_by_role("button", name="Delete: Delete me").click()
    for page in (first, second):
        await expect(items(page).locator(".item-title")).to_have_text(["Keep me"])
        await expect(unread(page)).to_have_text("1")
    response = await api.get("/api/notifications", headers=auth("alice"))
    assert [n["title"] for n in response.json()["items"]] == ["Keep me"]


async def test_inbox_loads_more_when_scrolled_to_the_end(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    body = {"user_ids": ["alice"], "type": "grade_posted", "title": "x"}
    for i in range(45):
        body["title"] = f"Notification {i}"
        response = await api.post("/api/notifications", json=body, headers={"X-API-Key": API_KEY})
        assert response.status_code == 201
    page = await open_page("alice")
    await expect(badge(page)).to_have_text("45")
    await page.get_by_test_id("bell").click()
    await expect(items(page)).to_have_count(20)
    await items(page).last.scroll_into_view_if_needed()
    await expect(items(page)).to_have_count(40)
    await items(page).last.scroll_into_view_if_needed()
    await expect(items(page)).to_have_count(45)
    await expect(page.locator("#inbox-more-wrap")).to_be_hidden()
    titles = await items(page).locator(".item-title").all_text_contents()
    assert titles == [f"Notification {i}" for i in reversed(range(45))]


async def test_notification_title_and_body_render_as_text(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    # A javascript: link never gets stored (the client would refuse it too: safeHref).
    refused = await api.post("/api/notifications", headers={"X-API-Key": API_KEY}, json={
        "user_id": "alice", "type": "t", "title": "x", "link": "javascript:alert(1)"})
    assert refused.status_code == 422
    await notify(api, "alice", title=XSS_IMG, body=XSS_SCRIPT)
    await notify(api, "alice", title=XSS_SCRIPT, body=XSS_IMG)
    await expect(badge(page)).to_have_text("2")
    await page.get_by_test_id("bell").click()
    await expect(items(page)).to_have_count(2)
    assert await items(page).locator(".item-title").all_text_contents() == [XSS_SCRIPT, XSS_IMG]
    assert await items(page).locator(".item-body").all_text_contents() == [XSS_IMG, XSS_SCRIPT]
    assert await page.locator("#inbox img, #inbox script, #inbox a").count() == 0
    assert await page.evaluate("window.__xss") is None


async def test_open_bell_screenshot(open_page: OpenPage, api: httpx.AsyncClient) -> None:
    page = await open_page("alice", width=1200, height=720)
    sends = [
        ("assignment_created", {"assignment": "Lab report 3", "course": "Biology",
                                "due_date": "Friday", "assignment_id": 3}),
        ("achievement_unlocked", {"achievement": "Seven-day streak",
                                  "description": "You studied every day this week."}),
        ("friend_request", {"sender_name": "Carol"}),
        ("grade_posted", {"assignment": "Essay 2", "grade": "A-", "grade_id": 5}),
    ]
    for template, data in sends:
        body = {"user_id": "alice", "type": template, "template": template, "data": data}
        response = await api.post("/api/notifications", json=body, headers={"X-API-Key": API_KEY})
        assert response.status_code == 201, response.text
    await expect(badge(page)).to_have_text("4")
    await page.get_by_test_id("bell").click()
    await expect(items(page)).to_have_count(4)
    await page.get_by_role("button", name="Mark as read: Friend request from Carol").click()
    await expect(unread(page)).to_have_text("3")
    await expect(badge(page)).to_be_hidden()
    await page.mouse.move(0, 0)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(DOCS_IMG / "bell.png"))


async def test_opening_the_bell_marks_what_it_shows_seen_in_every_tab(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    second = await open_page("alice", context=first.context)
    for title in ["One", "Two", "Three"]:
        await notify(api, "alice", title=title)
    for page in (first, second):
        await expect(badge(page)).to_have_text("3")
    await expect(second.get_by_test_id("bell")).to_have_attribute(
        "aria-label", "Notifications, 3 new, 3 unread")

    await first.get_by_test_id("bell").click()
    for page in (first, second):
        await expect(badge(page)).to_be_hidden()
        await expect(unread(page)).to_have_text("3")
    await expect(second.get_by_test_id("bell")).to_have_attribute(
        "aria-label", "Notifications, none new, 3 unread")
    # One arriving while the first tab shows the inbox is seen there, so everywhere.
    await notify(api, "alice", title="Four")
    await expect(items(first).first.locator(".item-title")).to_have_text("Four")
    for page in (first, second):
        await expect(badge(page)).to_be_hidden()
        await expect(unread(page)).to_have_text("4")
    response = await api.get("/api/notifications/unread-count", headers=auth("alice"))
    assert response.json() == {"count": 4, "unseen": 0}


async def test_archiving_moves_an_item_to_the_archive_and_back_in_every_tab(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    second = await open_page("alice", context=first.context)
    await notify(api, "alice", title="Old")
    await notify(api, "alice", title="Done with")
    for page in (first, second):
        await page.get_by_test_id("bell").click()
        await expect(items(page)).to_have_count(2)
    await first.get_by_role("button", name="Archive: Done with").click()
    for page in (first, second):
        await expect(items(page).locator(".item-title")).to_have_text(["Old"])
        await expect(unread(page)).to_have_text("1")
    await second.get_by_role("button", name="Archived").click()
    await expect(items(second).locator(".item-title")).to_have_text(["Done with"])
    await second.get_by_role("button", name="Move to inbox: Done with").click()
    await expect(items(second)).to_have_count(0)
    await expect(items(first).locator(".item-title")).to_have_text(["Done with", "Old"])
    await expect(unread(first)).to_have_text("2")
    await second.get_by_role("button", name="Inbox").click()
    await expect(items(second).locator(".item-title")).to_have_text(["Done with", "Old"])
    await second.get_by_role("button", name="Archive all").click()
    for page in (first, second):
        await expect(items(page)).to_have_count(0)
        await expect(unread(page)).to_have_text("0")
    response = await api.get("/api/notifications?box=archived", headers=auth("alice"))
    assert [n["title"] for n in response.json()["items"]] == ["Done with", "Old"]


async def test_snoozing_by_keyboard_hides_an_item_until_it_returns_live_on_top(
    open_page: OpenPage, api: httpx.AsyncClient, hub: HubServer
) -> None:
    page = await open_page("alice")
    await notify(api, "alice", title="Later")
    await notify(api, "alice", title="Now")
    bell = page.get_by_test_id("bell")
    await bell.focus()
    await page.keyboard.press("Enter")
    # The dialog takes the focus when it opens.
    await expect(page.locator("#inbox")).to_be_focused()
    await expect(items(page)).to_have_count(2)
    snooze = page.get_by_role("button", name="Snooze: Later")
    await snooze.focus()
    await page.keyboard.press("Enter")
    menu = page.get_by_role("group", name="Snooze until: Later")
    await expect(menu.get_by_role("button", name="In 1 hour")).to_be_focused()
    # Escape closes the choices (not the dialog) and returns to the button.
    await page.keyboard.press("Escape")
    await expect(menu).to_have_count(0)
    await expect(snooze).to_be_focused()
    await expect(page.locator("#inbox")).to_be_visible()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")  # "In 1 hour"
    await expect(items(page).locator(".item-title")).to_have_text(["Now"])
    await expect(unread(page)).to_have_text("1")
    await page.keyboard.press("Escape")
    await expect(bell).to_be_focused()

    # Its hour passes (moved, not waited for), and the hub's scheduler returns it.
    await hub.services.pool.execute(
        "UPDATE notifications SET snoozed_until = now() WHERE title = 'Later'")
    hub.services.schedule_changed.set()
    await expect(badge(page)).to_have_text("1")
    await expect(unread(page)).to_have_text("2")
    await expect(page.locator("#live-region")).to_have_text("Back: Later")
    await bell.click()
    await expect(items(page).locator(".item-title")).to_have_text(["Later", "Now"])
    await expect(badge(page)).to_be_hidden()


async def test_a_grouped_notification_updates_in_place_with_its_count(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("alice")
    await notify(api, "alice", title="Older")
    await notify(api, "alice", title="Post liked", collapse_key="post:1", actor="Ada")
    await expect(badge(page)).to_have_text("2")
    await page.get_by_test_id("bell").click()
    await expect(items(page).locator(".item-title")).to_have_text(["Post liked", "Older"])
    await expect(page.get_by_test_id("group-count")).to_have_count(0)
    await notify(api, "alice", title="Post liked", collapse_key="post:1", actor="Bob")
    await notify(api, "alice", title="Another", collapse_key="other")
    await notify(api, "alice", title="Post liked", collapse_key="post:1", actor="Cy")
    # Still one item for the group, back on top, retitled, with its count.
    await expect(items(page).locator(".item-title")).to_have_text(
        ["Post liked (3)", "Another", "Older"])
    await expect(page.get_by_test_id("group-count")).to_have_text(["×3"])
    await expect(page.locator("#live-region")).to_have_text("New notification: Post liked (3)")
