"""static/notifyhub.js used directly, as another app would: resume, fallback, auth."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from tests.conftest import auth, make_token
from tests.ui.conftest import TIMEOUT_MS, Console, OpenPage, notify

pytestmark = pytest.mark.browser

# Runs in the page: a NotifyHub of its own that records what its listeners see.
START_CLIENT = """
async ([token, transport]) => {
  const { NotifyHub } = await import("/static/notifyhub.js");
  const seen = { created: [], unread: [], statuses: [] };
  const hub = new NotifyHub({ token, transport });
  hub.on("notification.created", (n, e) => seen.created.push([e.seq, n.title]));
  hub.on("unread", (count) => seen.unread.push(count));
  hub.on("status", (s) => seen.statuses.push(s.status));
  window.testHub = hub;
  window.seen = seen;
  hub.connect();
}
"""


async def seen(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = await page.evaluate("window.seen")
    return value


async def wait_for(page: Page, condition: str) -> None:
    # A function, not a bare expression: the page's CSP forbids eval of strings.
    await page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS)


async def test_client_resumes_after_a_close_with_every_missed_event_exactly_once(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("bob")  # any page of the hub's origin will do
    await page.evaluate(START_CLIENT, [make_token("alice"), "ws"])
    await wait_for(page, "window.testHub.status === 'connected'")
    await notify(api, "alice", title="first")
    await wait_for(page, "window.seen.created.length === 1")
    # Read one on the server: the count the client keeps follows the event, not a poll.
    first_id = (await api.get("/api/notifications", headers=auth("alice"))).json()["items"][0]
    await page.evaluate("window.testHub.close()")
    await notify(api, "alice", title="second")
    await api.post("/api/notifications/mark-read", json={"ids": [first_id["id"]]},
                   headers=auth("alice"))
    await notify(api, "alice", title="third")

    await page.evaluate("window.testHub.connect()")
    await wait_for(page, "window.seen.created.length === 3")
    await notify(api, "alice", title="fourth")
    await wait_for(page, "window.seen.created.length === 4")
    state = await seen(page)
    assert state["created"] == [[1, "first"], [2, "second"], [4, "third"], [5, "fourth"]]
    # hello said 2 unread on reconnect (second, third); replayed events did not add again.
    assert state["unread"] == [0, 1, 2, 3]
    assert await page.evaluate("window.testHub.unread") == 3
    assert await page.evaluate("window.testHub.lastSeq") == 5


async def test_client_rest_wrappers_speak_the_contract(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("bob")
    await page.evaluate(START_CLIENT, [make_token("alice"), "ws"])
    await wait_for(page, "window.testHub.status === 'connected'")
    await notify(api, "alice", title="one")
    await notify(api, "alice", title="two")
    result = await page.evaluate(
        """async () => {
          const hub = window.testHub;
          const page = await hub.list({ limit: 1 });
          const older = await hub.list({ before: page.next_before });
          const marked = await hub.markRead([page.items[0].id]);
          const count = await hub.unreadCount();
          const message = await hub.sendMessage("carol", "hello carol", "c-42");
          const again = await hub.sendMessage("carol", "hello carol", "c-42");
          const conversations = await hub.conversations();
          const history = await hub.conversation("carol");
          const stored = await hub.getPreferences();
          const prefs = await hub.putPreferences({ ...stored, digest: "daily" });
          let refused = null;
          try { await hub.sendMessage("alice", "to myself"); } catch (e) { refused = e.status; }
          await hub.deleteMessage(message.id, { forEveryone: true });
          const after = await hub.conversation("carol");
          await hub.markAllRead();
          await hub.delete(page.items[0].id);
          const final = await hub.list();
          return {
            titles: [page.items[0].title, older.items[0].title], marked, count,
            same: message.id === again.id, partner: conversations.items[0].user_id,
            history: history.items.map((m) => m.body), digest: prefs.digest, refused,
            after: after.items.length, final: final.items.map((n) => [n.title, n.read]),
            announcements: (await hub.announcements()).items,
          };
        }"""
    )
    assert result["titles"] == ["two", "one"]
    assert result["marked"] == {"updated": 1, "unread_count": 1, "unseen_count": 1}
    assert result["count"] == 1
    assert result["same"] is True
    assert result["partner"] == "carol"
    assert result["history"] == ["hello carol"]
    assert result["digest"] == "daily"
    assert result["refused"] == 422
    assert result["after"] == 0
    assert result["final"] == [["one", True]]
    assert result["announcements"] == []
    await wait_for(page, "window.testHub.unread === 0")


async def test_client_reaches_conversations_with_users_whose_ids_need_encoding(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    page = await open_page("bob")
    await page.evaluate(START_CLIENT, [make_token("alice"), "ws"])
    await wait_for(page, "window.testHub.status === 'connected'")
    result = await page.evaluate(
        """async () => {
          const hub = window.testHub;
          const out = {};
          for (const name of ["a/b", "100%", "ann smith", "...", "auth0|x?y#z"]) {
            await hub.sendMessage(name, "hi " + name);
            out[name] = (await hub.conversation(name)).items.map((m) => m.body);
          }
          return out;
        }"""
    )
    assert result == {name: [f"hi {name}"] for name in ["a/b", "100%", "ann smith", "...",
                                                         "auth0|x?y#z"]}


async def test_client_falls_back_to_sse_when_websockets_are_blocked(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    async def block_websockets(page: Page) -> None:
        # Like a proxy that drops the connection with no close frame (the browser says
        # 1006). An explicit close code would mean WebSockets work.
        async def refuse(ws: WebSocketRoute) -> None:
            await ws.close(code=1006, reason="")

        await page.route_web_socket(re.compile(r"/ws\?"), refuse)

    page = await open_page("alice", prepare=block_websockets, wait_connected=False)
    status = page.get_by_test_id("connection-status")
    await expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    assert await status.get_attribute("title") == "Live over SSE"
    await notify(api, "alice", title="via fallback")
    await expect(page.get_by_test_id("unread-count")).to_have_text("1")


async def test_page_with_a_refused_token_goes_offline_and_says_why(
    open_page: OpenPage, console: Console
) -> None:
    console.allow(r"status of 401")  # the page's REST calls are refused too
    page = await open_page("alice", token="not-a-jwt", wait_connected=False)
    status = page.get_by_test_id("connection-status")
    await expect(status).to_have_text("offline", timeout=TIMEOUT_MS)
    await expect(status).to_have_attribute("title", re.compile("session has expired"))
