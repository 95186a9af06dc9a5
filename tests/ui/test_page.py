"""The demo page as served: security headers, no inline code, small screens, keyboard."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.ui.conftest import Console, HubServer, OpenPage, until_connected

STATIC = Path(__file__).resolve().parents[2] / "static"

CSP_DIRECTIVES = [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
]


def assert_strict_headers(response: httpx.Response, port: int) -> None:
    csp = response.headers["content-security-policy"]
    for directive in CSP_DIRECTIVES:
        assert directive in csp
    connect = re.search(r"connect-src ([^;]+)", csp)
    assert connect is not None
    assert connect.group(1).split() == [
        "'self'", f"ws://127.0.0.1:{port}", f"wss://127.0.0.1:{port}"
    ]
    assert "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_page_is_served_with_a_strict_content_security_policy(
    hub: HubServer, api: httpx.AsyncClient
) -> None:
    response = await api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-testid="bell"' in response.text
    assert_strict_headers(response, hub.port)


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/static/notifyhub.js", "text/javascript"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_are_served_with_the_same_headers(
    hub: HubServer, api: httpx.AsyncClient, path: str, media_type: str
) -> None:
    response = await api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert_strict_headers(response, hub.port)


async def test_static_route_serves_nothing_outside_the_static_directory(
    api: httpx.AsyncClient,
) -> None:
    for path in ["/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml", "/static/nope.js"]:
        response = await api.get(path)
        assert response.status_code == 404, path


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.testids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"{name}= on <{tag}>")
        if names.get("data-testid"):
            self.testids.add(str(names["data-testid"]))


def test_page_markup_has_no_inline_script_style_or_handlers_and_marks_its_parts() -> None:
    parser = _Markup()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.problems == []
    assert {
        "bell", "unread-count", "chat-recipient", "chat-input", "chat-send", "connection-status"
    } <= parser.testids


def test_page_code_never_turns_strings_into_markup_or_code() -> None:
    # User content goes into the page as text only; these are the ways it could not.
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*[\"']style|\.src\s*="
    )
    for path in STATIC.rglob("*.js"):
        hits = [line for line in path.read_text().splitlines() if forbidden.search(line)]
        assert hits == [], f"{path.name}: {hits}"


@pytest.mark.browser
async def test_page_fits_a_360px_screen_without_sideways_scrolling(
    open_page: OpenPage,
) -> None:
    page = await open_page("alice", width=360, height=740)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    await page.get_by_test_id("bell").click()
    inbox = page.locator("#inbox")
    await expect(inbox).to_be_visible()
    box = await inbox.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    assert await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    ) == 0


@pytest.mark.browser
async def test_bell_inbox_and_chat_are_reachable_by_keyboard(open_page: OpenPage) -> None:
    page = await open_page("alice")
    bell = page.get_by_test_id("bell")
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await bell.evaluate("el => el === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the bell")
    await page.keyboard.press("Enter")
    await expect(bell).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#inbox")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#inbox")).to_be_hidden()
    assert await bell.evaluate("el => el === document.activeElement")

    await page.get_by_test_id("chat-recipient").focus()
    await page.keyboard.type("bob")
    await page.keyboard.press("Enter")  # opens the conversation, moves to the message box
    await expect(page.get_by_test_id("chat-input")).to_be_focused()
    await page.keyboard.type("hello by keyboard")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("chat-message")).to_have_text(["hello by keyboard"])


@pytest.mark.browser
async def test_demo_mode_lets_the_visitor_pick_a_user(
    browser: Browser, database_url: str, tmp_path: Any, console: Console
) -> None:
    # No JWT secret configured: demo mode, where /demo/token hands out tokens.
    server = HubServer({"database_url": database_url, "data_dir": tmp_path / "data"})
    await server.start()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        console.watch(page, "visitor")
        await page.goto(server.url + "/")
        await expect(page.get_by_role("heading", name="Choose a demo user")).to_be_visible()
        await page.get_by_role("button", name="bob").click()
        await until_connected(page)
        await expect(page.locator("#account-name")).to_have_text("bob")
        assert "user=bob" in page.url
    finally:
        await context.close()
        await server.stop()
    assert console.unexpected() == []


async def test_head_of_the_page_carries_the_same_headers(
    hub: HubServer, api: httpx.AsyncClient
) -> None:
    # HEAD is what link checkers and load balancers send.
    response = await api.head("/")
    assert response.status_code == 200
    assert_strict_headers(response, hub.port)
