"""One live connection per browser: the tabs of a user share the leader tab's socket.

Each page is the demo page signed in as bob (any page of the hub's origin will do) and
runs a NotifyHub of alice's that records what its listeners get, as another app would;
the pages of one browser context are the tabs of one browser.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from tests.conftest import auth, make_token
from tests.ui.conftest import TIMEOUT_MS, HubServer, OpenPage, notify
from tests.waiting import eventually

pytestmark = pytest.mark.browser

# Runs in the page: alice's client, recording what its listeners see.
START_CLIENT = """
async ([token, share]) => {
  const { NotifyHub } = await import("/static/notifyhub.js");
  const seen = { created: [], messages: [], typing: [], hellos: 0 };
  const hub = new NotifyHub({ token, share });
  hub.on("notification.created", (n, e) => seen.created.push([e.seq, n.title]));
  hub.on("message.created", (m, e) => seen.messages.push([e.seq, m.body]));
  hub.on("typing", (d) => seen.typing.push(d.user_id));
  hub.on("hello", () => { seen.hellos += 1; });
  window.testHub = hub;
  window.seen = seen;
  hub.connect();
}
"""


async def wait_for(page: Page, condition: str) -> None:
    # A function, not a bare expression: the page's CSP forbids eval of strings.
    await page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS)


def subject(url: str) -> str | None:
    """The `sub` of the token in a live connection's URL."""
    match = re.search(r"[?&]token=([^&]+)", url)
    if not match:
        return None
    payload = match.group(1).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


class Sockets:
    """The WebSockets the pages of a test open, by the user of their token."""

    def __init__(self) -> None:
        self.users: list[str | None] = []

    def watch(self, page: Page) -> None:
        page.on("websocket", lambda ws: self.users.append(subject(ws.url)))

    def of(self, user: str) -> int:
        return self.users.count(user)


async def alice_tabs(
    open_page: OpenPage, count: int, sockets: Sockets, *, share: bool = True
) -> list[Page]:
    """`count` tabs of one browser, each running alice's client, all connected."""
    pages: list[Page] = []
    context: BrowserContext | None = None
    for _ in range(count):
        page = await open_page("bob", context=context)
        context = page.context
        sockets.watch(page)
        await page.evaluate(START_CLIENT, [make_token("alice"), share])
        pages.append(page)
    for page in pages:
        await wait_for(page, "window.testHub.status === 'connected'")
    return pages


async def roles(pages: list[Page]) -> list[str]:
    return [await page.evaluate("window.testHub.role") for page in pages]


async def leader_of(pages: list[Page]) -> Page:
    async def find() -> Page | None:
        found = [p for p, role in zip(pages, await roles(pages), strict=True) if role == "leader"]
        return found[0] if len(found) == 1 else None

    page: Page = await eventually(find)
    return page


def live_connections(hub: HubServer, user: str) -> int:
    count: int = hub.app.state.node.registry.count(user)
    return count


async def test_three_tabs_share_one_websocket_and_each_gets_every_event_once(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    sockets = Sockets()
    pages = await alice_tabs(open_page, 3, sockets)
    assert sorted(await roles(pages)) == ["follower", "follower", "leader"]
    for page in pages:
        await wait_for(page, "window.testHub.tabs === 3")
    assert live_connections(hub, "alice") == 1
    assert sockets.of("alice") == 1

    for i in range(5):
        await notify(api, "alice", title=f"n{i}")
    expected = [[i + 1, f"n{i}"] for i in range(5)]
    for page in pages:
        await wait_for(page, "window.seen.created.length === 5")
        assert (await page.evaluate("window.seen"))["created"] == expected
        assert await page.evaluate("window.testHub.unread") == 5
        assert await page.evaluate("window.testHub.lastSeq") == 5
    assert sockets.of("alice") == 1


async def test_closing_the_leader_mid_stream_hands_over_with_no_loss_and_no_duplicate(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    sockets = Sockets()
    pages = await alice_tabs(open_page, 3, sockets)
    leader = await leader_of(pages)
    total = 40
    for i in range(10):
        await notify(api, "alice", title=f"n{i}")
    await wait_for(leader, "window.seen.created.length === 10")

    async def stream() -> None:
        for i in range(10, total):
            await notify(api, "alice", title=f"n{i}")

    # The rest of the stream is created while the leader tab closes and another takes
    # over: some events reach the old leader, some nobody, some the new one.
    creating = asyncio.create_task(stream())
    try:
        await leader.close()
        await asyncio.wait_for(creating, TIMEOUT_MS / 1000)
    finally:
        creating.cancel()

    rest = [page for page in pages if page is not leader]
    successor = await leader_of(rest)
    expected = [[i + 1, f"n{i}"] for i in range(total)]
    for page in rest:
        await wait_for(page, f"window.seen.created.length >= {total}")
        assert (await page.evaluate("window.seen"))["created"] == expected
        assert await page.evaluate("window.testHub.unread") == total
        await wait_for(page, "window.testHub.tabs === 2")
    assert await successor.evaluate("window.testHub.status") == "connected"
    await eventually(lambda: live_connections(hub, "alice") == 1)
    assert sockets.of("alice") == 2  # the first leader's, then its successor's

    # The stream goes on through the new leader, still once each.
    await notify(api, "alice", title="after")
    for page in rest:
        await wait_for(page, f"window.seen.created.length === {total + 1}")
        assert (await page.evaluate("window.seen"))["created"][-1] == [total + 1, "after"]


async def test_a_follower_sends_reads_and_types_through_the_leader(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    sockets = Sockets()
    pages = await alice_tabs(open_page, 2, sockets)
    leader = await leader_of(pages)
    follower = next(page for page in pages if page is not leader)
    carol = await open_page("carol")
    await carol.evaluate(START_CLIENT, [make_token("carol"), True])
    await wait_for(carol, "window.testHub.status === 'connected'")
    rest_calls: list[str] = []
    follower.on("request", lambda r: rest_calls.append(r.url) if "/api/" in r.url else None)
    created = await notify(api, "alice", title="read me")
    await wait_for(follower, "window.testHub.unread === 1")

    result = await follower.evaluate(
        """async (id) => {
          const hub = window.testHub;
          const message = await hub.sendMessage("carol", "from a follower", "c-f1");
          const marked = await hub.markRead([id]);
          const typed = hub.typing("carol");
          let refused = null;
          try {
            await hub.sendMessage("alice", "to myself");
          } catch (e) {
            refused = { name: e.name, status: e.status, code: e.code };
          }
          return { body: message.body, client: message.client_id, marked, typed, refused };
        }""",
        created["id"],
    )
    assert result["body"] == "from a follower"
    assert result["client"] == "c-f1"
    assert result["marked"] == {"updated": 1, "unread_count": 0, "unseen_count": 0}
    assert result["typed"] is True
    # The hub's own error code, not a generic failure, and no retry over REST.
    assert result["refused"] == {"name": "HubError", "status": 422, "code": "invalid_input"}
    assert rest_calls == []  # all of it went over the leader's socket
    await wait_for(carol, "window.seen.typing.includes('alice')")
    await wait_for(carol, "window.seen.messages.length === 1")
    for page in pages:
        await wait_for(page, "window.testHub.unread === 0")
        await wait_for(page, "window.seen.messages.length === 1")
    body = (await api.get("/api/messages/conversation/alice", headers=auth("carol"))).json()
    assert [m["body"] for m in body["items"]] == ["from a follower"]
    assert live_connections(hub, "alice") == 1


async def test_share_false_keeps_a_socket_per_tab(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    sockets = Sockets()
    pages = await alice_tabs(open_page, 2, sockets, share=False)
    assert await roles(pages) == ["solo", "solo"]
    await eventually(lambda: live_connections(hub, "alice") == 2)
    assert sockets.of("alice") == 2
    await notify(api, "alice", title="both")
    for page in pages:
        await wait_for(page, "window.seen.created.length === 1")


async def test_tabs_of_different_users_never_share(
    open_page: OpenPage, hub: HubServer
) -> None:
    first = await open_page("bob")
    for user in ("alice", "carol"):
        page = await open_page("bob", context=first.context)
        await page.evaluate(START_CLIENT, [make_token(user), True])
        await wait_for(page, "window.testHub.status === 'connected'")
        assert await page.evaluate("window.testHub.role") == "leader"
        assert await page.evaluate("window.testHub.userId") == user
    assert live_connections(hub, "alice") == 1
    assert live_connections(hub, "carol") == 1
    # The demo pages of bob (the first tab and the two above) share bob's.
    assert live_connections(hub, "bob") == 1


async def test_an_unavailable_ack_falls_back_to_rest_and_other_errors_keep_their_code(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    answered: list[str] = []

    async def database_down_for_writes(ws: WebSocketRoute) -> None:
        # The real hub behind, except that writes over the socket meet a database
        # outage: the hub's `unavailable` error frame, as api/ws.py sends it.
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") in ("message.send", "notifications.mark_read") and (
                frame.get("data", {}).get("recipient_id") != "alice"
            ):
                answered.append(frame["type"])
                data = {"code": "unavailable", "message": "the database is unavailable; retry",
                        "client_id": frame["client_id"]}
                ws.send(json.dumps({"type": "error", "seq": None, "data": data}))
            else:
                server.send(message)

        ws.on_message(from_page)

    async def prepare(page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws\?"), database_down_for_writes)

    page = await open_page("bob", prepare=prepare)  # alice's client below leads alone
    rest_calls: list[str] = []
    page.on("request", lambda r: rest_calls.append(r.url) if r.method == "POST" else None)
    created = await notify(api, "alice", title="read me")
    await page.evaluate(START_CLIENT, [make_token("alice"), True])
    await wait_for(page, "window.testHub.status === 'connected'")
    result = await page.evaluate(
        """async (id) => {
          const hub = window.testHub;
          const message = await hub.sendMessage("carol", "over REST", "c-u1");
          const marked = await hub.markRead([id]);
          let refused = null;
          try {
            await hub.sendMessage("alice", "to myself");
          } catch (e) {
            refused = { status: e.status, code: e.code };
          }
          return { body: message.body, marked, refused };
        }""",
        created["id"],
    )
    assert answered == ["message.send", "notifications.mark_read"]
    assert result["body"] == "over REST"
    assert result["marked"] == {"updated": 1, "unread_count": 0, "unseen_count": 0}
    assert result["refused"] == {"status": 422, "code": "invalid_input"}
    sends = [url for url in rest_calls if url.endswith("/api/messages/send")]
    marks = [url for url in rest_calls if url.endswith("/api/notifications/mark-read")]
    assert (len(sends), len(marks)) == (1, 1)
    body = (await api.get("/api/messages/conversation/carol", headers=auth("alice"))).json()
    assert [m["body"] for m in body["items"]] == ["over REST"]


async def test_demo_page_shows_the_tabs_sharing_its_connection(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    first = await open_page("alice")
    pages = [first] + [await open_page("alice", context=first.context) for _ in range(2)]
    for page in pages:
        await expect(page.get_by_test_id("shared-tabs")).to_have_text("3")
    assert live_connections(hub, "alice") == 1

    async def leader() -> Page | None:
        found = [p for p in pages if not p.is_closed()
                 and await p.locator("#shared-tabs").get_attribute("data-role") == "leader"]
        return found[0] if len(found) == 1 else None

    first_leader: Page = await eventually(leader)
    await notify(api, "alice", title="one")
    for page in pages:
        await expect(page.get_by_test_id("unread-count")).to_have_text("1")
    await first_leader.close()
    pages.remove(first_leader)
    await eventually(leader)
    for page in pages:
        await expect(page.get_by_test_id("shared-tabs")).to_have_text("2")
        await expect(page.get_by_test_id("connection-status")).to_have_text("connected")
    await notify(api, "alice", title="two")
    for page in pages:
        await expect(page.get_by_test_id("unread-count")).to_have_text("2")
    await eventually(lambda: live_connections(hub, "alice") == 1)


async def test_a_follower_that_comes_back_gets_what_it_missed_from_the_leader(
    open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    sockets = Sockets()
    pages = await alice_tabs(open_page, 2, sockets)
    leader = await leader_of(pages)
    follower = next(page for page in pages if page is not leader)
    await notify(api, "alice", title="before")
    await wait_for(follower, "window.seen.created.length === 1")
    await follower.evaluate("window.testHub.close()")
    for title in ("away 1", "away 2"):
        await notify(api, "alice", title=title)
    await wait_for(leader, "window.seen.created.length === 3")

    await follower.evaluate("window.testHub.connect()")
    await wait_for(follower, "window.seen.created.length === 3")
    await wait_for(follower, "window.testHub.status === 'connected'")
    assert await follower.evaluate("window.testHub.role") == "follower"
    # Replayed from the leader's kept events, not over a socket of its own.
    assert sockets.of("alice") == 1
    await notify(api, "alice", title="after")
    await wait_for(follower, "window.seen.created.length === 4")
    state = await follower.evaluate("window.seen")
    assert state["created"] == [[1, "before"], [2, "away 1"], [3, "away 2"], [4, "after"]]
    assert await follower.evaluate("window.testHub.unread") == 4


async def test_a_browser_without_web_locks_keeps_a_socket_per_tab(
    browser: Browser, open_page: OpenPage, hub: HubServer, api: httpx.AsyncClient
) -> None:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script("delete Navigator.prototype.locks;")
    try:
        pages = [await open_page("alice", context=context) for _ in range(2)]
        for page in pages:
            await expect(page.get_by_test_id("shared-tabs")).to_have_text("1")
            assert await page.locator("#shared-tabs").get_attribute("data-role") == "solo"
        await eventually(lambda: live_connections(hub, "alice") == 2)
        await notify(api, "alice", title="both")
        for page in pages:
            await expect(page.get_by_test_id("unread-count")).to_have_text("1")
    finally:
        await context.close()
