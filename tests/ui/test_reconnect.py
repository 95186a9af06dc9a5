"""How the browser client reacts to each close code, and the chat's mark-read load."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from playwright.async_api import Page, Request, WebSocketRoute, expect

from tests.conftest import auth
from tests.ui.conftest import TIMEOUT_MS, OpenPage, until_connected

pytestmark = pytest.mark.browser

# Runs in the page: a NotifyHub whose getToken hands out a token the (mocked) hub refuses.
START_REFUSED_CLIENT = """
async () => {
  const { NotifyHub } = await import("/static/notifyhub.js");
  window.tokenCalls = 0;
  const hub = new NotifyHub({
    transport: "ws",
    getToken: async () => {
      window.tokenCalls += 1;
      return "refused-" + window.tokenCalls;
    },
  });
  window.testHub = hub;
  hub.connect();
}
"""


async def wait_for(page: Page, condition: str) -> None:
    # A function, not a bare expression: the page's CSP forbids eval of strings.
    await page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS)


async def test_a_refused_fresh_token_backs_off_instead_of_reconnecting_in_a_loop(
    open_page: OpenPage,
) -> None:
    handshakes: list[str] = []

    async def refuse(ws: WebSocketRoute) -> None:
        handshakes.append(ws.url)
        await ws.close(code=4401, reason="invalid token")

    async def prepare(page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws\?token=refused-"), refuse)

    page = await open_page("bob", prepare=prepare)  # bob's own connection is real
    # Jitter pinned to its top: the delays are exactly the backoff caps (0.5, 1, 2, 4 s),
    # so at most 5 handshakes fit in the window below whatever the scheduler does.
    await page.evaluate("Math.random = () => 0.999")
    await page.evaluate(START_REFUSED_CLIENT)
    await wait_for(page, "window.tokenCalls >= 2")
    # Counting, not timing: the old client made ~80 handshakes a second here.
    await asyncio.sleep(3)
    count = len(handshakes)
    assert 2 <= count <= 5, handshakes
    # Every attempt asked getToken for a fresh token.
    assert await page.evaluate("window.tokenCalls") >= count
    assert await page.evaluate("window.testHub.status") == "reconnecting"
    await page.evaluate("window.testHub.close()")


async def test_a_4429_before_hello_does_not_switch_to_sse(open_page: OpenPage) -> None:
    handshakes = 0
    streams: list[str] = []

    async def busy_then_real(ws: WebSocketRoute) -> None:
        nonlocal handshakes
        handshakes += 1
        if handshakes <= 3:
            await ws.close(code=4429, reason="too many connection attempts; retry in 1 s")
        else:
            ws.connect_to_server()

    async def prepare(page: Page) -> None:
        page.on("request", lambda r: streams.append(r.url) if "/api/stream" in r.url else None)
        await page.route_web_socket(re.compile(r"/ws\?"), busy_then_real)

    page = await open_page("alice", prepare=prepare, wait_connected=False, fake_clock=True)
    status = page.get_by_test_id("connection-status")
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        while handshakes < 4:
            # Jump over the (at least 5 s) pause the hub asked for; the reconnects are real.
            await page.clock.fast_forward(20_000)
            await asyncio.sleep(0.1)
    await expect(status).to_have_text("connected")
    assert await status.get_attribute("title") == "Live over WebSocket"
    assert streams == []


async def test_a_4400_goes_offline_and_stops_reconnecting(open_page: OpenPage) -> None:
    handshakes = 0

    async def bad_since(ws: WebSocketRoute) -> None:
        nonlocal handshakes
        handshakes += 1
        await ws.close(code=4400, reason="bad since")

    async def prepare(page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws\?"), bad_since)

    page = await open_page("alice", prepare=prepare, wait_connected=False, fake_clock=True)
    status = page.get_by_test_id("connection-status")
    await expect(status).to_have_text("offline")
    await expect(status).to_have_attribute("title", re.compile("refused to resume"))
    await page.clock.fast_forward(120_000)
    await page.evaluate("new Promise((resolve) => setTimeout(resolve, 0))")
    assert handshakes == 1
    await expect(status).to_have_text("offline")


async def test_a_missing_pong_reconnects_without_waiting_for_the_browser_to_close(
    open_page: OpenPage,
) -> None:
    handshakes = 0

    async def silent(ws: WebSocketRoute) -> None:
        # Says hello, then never answers a ping nor completes a close: a dead peer.
        nonlocal handshakes
        handshakes += 1
        ws.on_message(lambda message: None)
        ws.on_close(lambda code, reason: None)
        hello = {"user_id": "alice", "last_seq": 0, "unread_count": 0}
        ws.send(json.dumps({"type": "hello", "seq": None, "data": hello}))

    async def prepare(page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws\?"), silent)

    page = await open_page("alice", prepare=prepare, fake_clock=True)
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        while handshakes < 2:
            # 25 s to the ping, 10 s to the pong timeout, then the backoff delay.
            await page.clock.fast_forward(20_000)
            await asyncio.sleep(0.1)
    await until_connected(page)


async def test_a_burst_of_incoming_messages_is_marked_read_with_few_requests(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    marks: list[Request] = []
    alice = await open_page("alice")
    alice.on("request", lambda r: marks.append(r) if "/api/messages/mark-read" in r.url else None)
    await alice.get_by_test_id("chat-recipient").fill("bob")
    await alice.get_by_test_id("chat-recipient").press("Enter")
    # Sent together, so the burst arrives well inside the client's 1 s debounce window.
    responses = await asyncio.gather(*[
        api.post("/api/messages/send", json={"recipient_id": "alice", "body": f"burst {i}"},
                 headers=auth("bob"))
        for i in range(10)
    ])
    assert [r.status_code for r in responses] == [201] * 10
    await expect(alice.get_by_test_id("chat-message")).to_have_count(10)
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        while True:
            body = (await api.get("/api/messages/conversations", headers=auth("alice"))).json()
            if body["items"][0]["unread_count"] == 0:
                break
            await asyncio.sleep(0.1)
    assert 1 <= len(marks) <= 3, [r.post_data for r in marks]


async def test_safe_href_keeps_paths_on_this_site_and_refuses_tricks(
    open_page: OpenPage,
) -> None:
    page = await open_page("alice")
    result = await page.evaluate(
        """async (links) => {
          const { safeHref } = await import("/static/dom.js");
          return links.map((link) => safeHref(link));
        }""",
        [
            "/\\evil.example/x",
            "/\t/evil.example/x",
            "//evil.example/x",
            "javascript:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,hi",
            "/inbox?x=1",
            "https://example.com/a",
        ],
    )
    origin = page.url.split("/#")[0]
    assert result == [
        None,
        None,
        None,
        None,
        None,
        None,
        origin + "/inbox?x=1",
        "https://example.com/a",
    ]
