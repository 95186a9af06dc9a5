"""The bell, its badge and the inbox in a real browser, driven by the hub's API."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.conftest import API_KEY, auth
from tests.ui.conftest import DOCS_IMG, OpenPage, notify

pytestmark = pytest.mark.browser

UNREAD = re.compile(r"\bunread\b")
XSS_IMG = "<img src=x onerror=window.__xss=1>"
XSS_SCRIPT = "<script>window.__xss=2</script>"


def badge(page: Page):  # noqa: ANN201 - a Playwright Locator
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
        await expect(badge(page)).to_have_text("2")
    await expect(items(first).filter(has_text="Two")).not_to_have_class(UNREAD)

    await second.get_by_test_id("bell").click()
    await expect(items(second).filter(has_text="Two")).not_to_have_class(UNREAD)
    await second.get_by_role("button", name="Mark all read").click()
    for page in (first, second):
        await expect(badge(page)).to_have_text("0")
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
        await expect(badge(page)).to_have_text("1")
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
    await expect(badge(page)).to_have_text("3")
    await page.mouse.move(0, 0)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(DOCS_IMG / "bell.png"))
