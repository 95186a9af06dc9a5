"""The chat's presence dot and "last seen", kept live by ``presence`` events, in Chromium."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.conftest import auth
from tests.ui.conftest import HubServer, OpenPage

pytestmark = pytest.mark.browser


@pytest.fixture
async def hub(settings_env: dict[str, Any]) -> AsyncIterator[HubServer]:
    """The page's hub, with a short debounce so a closed page goes offline soon."""
    server = HubServer({**settings_env, "presence_debounce_seconds": 0.5})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def open_conversation(page: Page, other: str) -> None:
    await page.get_by_test_id("chat-recipient").fill(other)
    await page.get_by_test_id("chat-recipient").press("Enter")


async def test_the_partner_dot_turns_online_then_shows_last_seen(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    r = await api.post("/api/messages/send", json={"recipient_id": "alice", "body": "hey"},
                       headers=auth("bob"))
    assert r.status_code == 201
    alice = await open_page("alice")
    await open_conversation(alice, "bob")
    dot = alice.get_by_test_id("presence")
    await expect(dot).to_have_attribute("data-state", "offline")
    await expect(dot).to_have_text("offline")  # never seen

    bob = await open_page("bob")
    await expect(dot).to_have_attribute("data-state", "online")
    await expect(dot).to_have_text("online")

    await bob.close()
    await expect(dot).to_have_attribute("data-state", "offline")
    await expect(dot).to_have_text(re.compile(r"^last seen "))
    await expect(dot).to_have_attribute("title", re.compile(r"^Last seen "))


async def test_no_dot_for_a_stranger_until_the_first_message(open_page: OpenPage) -> None:
    alice = await open_page("alice")
    await open_page("carol")
    await open_conversation(alice, "carol")
    dot = alice.get_by_test_id("presence")
    await expect(dot).to_be_hidden()  # 403: not a conversation partner yet
    await alice.get_by_test_id("chat-input").fill("Hello Carol")
    await alice.get_by_test_id("chat-input").press("Enter")
    await expect(dot).to_have_attribute("data-state", "online")


async def test_hiding_my_status_in_preferences_shows_me_offline_to_partners(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    r = await api.post("/api/messages/send", json={"recipient_id": "alice", "body": "hey"},
                       headers=auth("bob"))
    assert r.status_code == 201
    alice = await open_page("alice")
    bob = await open_page("bob")
    await open_conversation(alice, "bob")
    dot = alice.get_by_test_id("presence")
    await expect(dot).to_have_attribute("data-state", "online")

    await bob.get_by_test_id("pref-hide-presence").check()
    await bob.get_by_role("button", name="Save preferences").click()
    await expect(bob.locator("#prefs-status")).to_have_text("Saved.")
    await expect(dot).to_have_text("offline")
    stored = await api.get("/api/notifications/preferences", headers=auth("bob"))
    assert stored.json()["hide_presence"] is True

    await bob.get_by_test_id("pref-hide-presence").uncheck()
    await bob.get_by_role("button", name="Save preferences").click()
    await expect(dot).to_have_text("online")
