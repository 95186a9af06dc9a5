"""Web push in Chromium: the service worker's ``push`` and ``notificationclick`` handlers,
and the demo page's "Enable browser notifications" switch (docs/delivery.md, "Web push").

Headless Chromium has no vendor push service, so pushes are dispatched inside the real
worker (``PushEvent``/``NotificationEvent`` built by the test, their ``waitUntil``
collected), and the switch's ``pushManager.subscribe`` answers with a subscription of a
push service on loopback; everything else is the browser's own (registration,
``showNotification``, ``getNotifications``) and the hub's over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Worker, expect

from hub.channels import Delivery
from hub.channels.push import PushChannel
from hub.vapid import resolve
from tests.hub.pushservice import PushService, push_service, unb64
from tests.hub.test_push import SUBJECT, raw_key
from tests.ui.conftest import TIMEOUT_MS, HubServer, OpenPage

pytestmark = pytest.mark.browser


@pytest.fixture
def settings_env(settings_env: dict[str, Any]) -> dict[str, Any]:
    return {**settings_env, "vapid_private_key": raw_key(), "vapid_subject": SUBJECT,
            "push_allow_http_loopback": True}


@pytest.fixture
async def worker_context(browser: Browser, hub: HubServer) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    await context.grant_permissions(["notifications"], origin=hub.url)
    try:
        yield context
    finally:
        await context.close()


async def registered_worker(context: BrowserContext, hub: HubServer) -> Worker:
    """/sw.js registered from a page of the hub, active, as Playwright's handle."""
    page = await context.new_page()
    await page.goto(f"{hub.url}/health")
    scope = await page.evaluate("""async () => {
        const registration = await navigator.serviceWorker.register("/sw.js");
        await navigator.serviceWorker.ready;
        return registration.scope;
    }""")
    assert scope == f"{hub.url}/"
    if not context.service_workers:
        await context.wait_for_event("serviceworker")
    [worker] = context.service_workers
    return worker


#: Dispatch an event built by ``make(self)`` in the worker and wait for its waitUntil.
DISPATCH = """async ([kind, init]) => {
    let event;
    if (kind === "push") {
        event = new PushEvent("push", init);
    } else {
        const [shown] = await self.registration.getNotifications();
        event = new NotificationEvent("notificationclick", { notification: shown });
    }
    const waits = [];
    Object.defineProperty(event, "waitUntil", { value: (p) => waits.push(p) });
    self.dispatchEvent(event);
    await Promise.all(waits);
}"""

SHOWN = """async () => (await self.registration.getNotifications()).map(
    (n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }))"""


def push_json(**fields: Any) -> dict[str, Any]:
    return {"data": orjson.dumps({"id": 42, "type": "grade_posted", "title": "Grade posted",
                                  "body": "Essay 2: A-", "link": "/grades/5",
                                  "priority": "normal", **fields}).decode()}


async def test_the_service_worker_shows_a_push_with_its_title_body_tag_and_link(
    worker_context, hub
):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json()])
    assert await worker.evaluate(SHOWN) == [{
        "title": "Grade posted", "body": "Essay 2: A-", "tag": "n42",
        "data": {"id": 42, "link": "/grades/5"}}]


async def test_a_newer_push_about_the_same_notification_replaces_the_shown_one(
    worker_context, hub
):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json(body="first")])
    await worker.evaluate(DISPATCH, ["push", push_json(body="second")])
    await worker.evaluate(DISPATCH, ["push", push_json(id=43, title="Other")])
    shown = await worker.evaluate(SHOWN)
    assert sorted((n["tag"], n["body"]) for n in shown) == [("n42", "second"),
                                                           ("n43", "Essay 2: A-")]


async def test_clicking_a_push_closes_it_and_opens_its_link(worker_context, hub):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json()])
    # A click the test dispatches is not a user's, so the browser would refuse to open a
    # window for it: the worker's openWindow is recorded instead.
    await worker.evaluate("""() => {
        self.opened = [];
        self.clients.openWindow = async (url) => { self.opened.push(url); return null; };
    }""")
    await worker.evaluate(DISPATCH, ["notificationclick", None])
    assert await worker.evaluate("() => self.opened") == [f"{hub.url}/grades/5"]
    assert await worker.evaluate(SHOWN) == []


async def test_a_click_on_a_push_with_a_script_link_opens_the_site_instead(
    worker_context, hub
):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json(link="javascript:alert(1)")])
    await worker.evaluate("""() => {
        self.opened = [];
        self.clients.openWindow = async (url) => { self.opened.push(url); return null; };
    }""")
    await worker.evaluate(DISPATCH, ["notificationclick", None])
    assert await worker.evaluate("() => self.opened") == [f"{hub.url}/"]


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    async with push_service() as service:
        yield service


def fake_push_manager(subscription: dict[str, Any]) -> str:
    """An init script: ``pushManager`` answers with ``subscription`` (no vendor service)."""
    return "const PUSH_JSON = " + orjson.dumps(subscription).decode() + ";\n" + """(() => {
        const json = PUSH_JSON;
        const state = { subscribed: false, unsubscribed: 0 };
        window.__push = state;
        const sub = {
            endpoint: json.endpoint,
            options: { applicationServerKey: null },
            toJSON: () => json,
            unsubscribe: async () => {
                state.subscribed = false;
                state.unsubscribed++;
                return true;
            },
        };
        PushManager.prototype.subscribe = async function (options) {
            state.subscribed = true;
            state.key = Array.from(new Uint8Array(options.applicationServerKey));
            sub.options = { applicationServerKey: options.applicationServerKey };
            return sub;
        };
        PushManager.prototype.getSubscription = async function () {
            return state.subscribed ? sub : null;
        };
    })();"""


async def test_the_switch_subscribes_with_the_hubs_key_and_pushes_then_reach_the_browser(
    open_page: OpenPage, browser: Browser, hub: HubServer, service: PushService
):
    sub = service.browser("chromium")
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    await context.grant_permissions(["notifications"], origin=hub.url)
    await context.add_init_script(fake_push_manager(sub))
    page = await open_page("alice", context=context)
    switch = page.get_by_test_id("push-enabled")
    await expect(switch).not_to_be_checked()
    await switch.check()
    await expect(page.locator("#push-status")).to_contain_text("On")
    vapid = resolve(hub.app.state.settings)
    assert vapid is not None
    key = bytes(await page.evaluate("() => window.__push.key"))
    assert key == unb64(vapid.public_key)
    pool = hub.services.pool
    rows = await pool.fetch("SELECT user_id, endpoint FROM push_subscriptions")
    assert [(r["user_id"], r["endpoint"]) for r in rows] == [("alice", sub["endpoint"])]

    channel = PushChannel(pool, vapid, ttl=60)
    try:
        await channel.send(Delivery(1, "push", 1, {
            "id": 5, "user_id": "alice", "type": "grade_posted", "title": "Grade posted",
            "body": "Essay 2: A-", "link": "/grades/5", "priority": "normal"}))
    finally:
        await channel.close()
    [push] = await service.wait(1)
    assert push.error is None and orjson.loads(push.plaintext or b"")["title"] == "Grade posted"

    await switch.uncheck()
    await expect(page.locator("#push-status")).to_have_text("Off.")
    assert await pool.fetchval("SELECT count(*) FROM push_subscriptions") == 0
    assert await page.evaluate("() => window.__push.unsubscribed") == 1
    await context.close()
