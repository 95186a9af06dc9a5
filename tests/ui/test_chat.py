"""Direct messages between two real browsers (two users, two browser contexts)."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.conftest import auth
from tests.ui.conftest import DOCS_IMG, OpenPage

pytestmark = pytest.mark.browser


def messages(page: Page):  # noqa: ANN201 - a Playwright Locator
    return page.get_by_test_id("chat-message")


async def open_conversation(page: Page, other: str) -> None:
    await page.get_by_test_id("chat-recipient").fill(other)
    await page.get_by_test_id("chat-recipient").press("Enter")


async def keep_typing_until_seen(typist: Page, watcher: Page, text: str) -> None:
    """Type ``text`` a key at a time until ``watcher`` shows the typing indicator.

    Typing frames are throttled (by the page and by the hub), so one keystroke right
    after another frame may legitimately send nothing.
    """
    indicator = watcher.locator("#typing")
    for key in text:
        await typist.get_by_test_id("chat-input").press_sequentially(key)
        try:
            await expect(indicator).to_have_text("bob is typing…", timeout=1000)
            return
        except AssertionError:
            continue
    raise AssertionError("the typing indicator never showed")


async def test_two_users_chat_in_both_directions(open_page: OpenPage) -> None:
    alice = await open_page("alice", width=1200, height=720)
    bob = await open_page("bob", width=1200, height=720)

    await open_conversation(alice, "bob")
    await alice.get_by_test_id("chat-input").fill("Hi Bob! Did you finish the lab report?")
    await alice.get_by_test_id("chat-input").press("Enter")  # Enter sends
    await expect(messages(alice)).to_have_text(["Hi Bob! Did you finish the lab report?"])
    await expect(alice.get_by_test_id("chat-input")).to_have_value("")
    await expect(alice.locator(".message.mine .receipt")).to_have_text(["Sent"])

    # Bob sees a conversation with one unread message, and alice's note in his inbox.
    conversation = bob.locator(".conversation-item", has_text="alice")
    await expect(conversation.locator(".pill")).to_have_text("1")
    await expect(bob.get_by_test_id("unread-count")).to_have_text("1")
    await conversation.click()
    await expect(bob.get_by_test_id("chat-recipient")).to_have_value("alice")
    await expect(messages(bob)).to_have_text(["Hi Bob! Did you finish the lab report?"])
    await expect(conversation.locator(".pill")).to_have_count(0)
    # ... and alice gets the read receipt.
    await expect(alice.locator(".message.mine .receipt")).to_have_text(["Read"])

    # Typing indicator, then a reply sent with the button.
    await bob.get_by_test_id("chat-input").press_sequentially("Al")
    await expect(alice.locator("#typing")).to_have_text("bob is typing…")
    await bob.get_by_test_id("chat-input").fill("Almost, I'll send it tonight.")
    await bob.get_by_test_id("chat-send").click()
    await expect(alice.locator("#typing")).to_have_text("")
    expected = ["Hi Bob! Did you finish the lab report?", "Almost, I'll send it tonight."]
    await expect(messages(alice)).to_have_text(expected)
    await expect(messages(bob)).to_have_text(expected)
    await expect(alice.locator(".message.theirs .bubble")).to_have_text([expected[1]])
    await expect(bob.locator(".message.mine .receipt")).to_have_text(["Read"])

    await alice.get_by_test_id("chat-input").fill("Great, thanks!")
    await alice.get_by_test_id("chat-input").press("Enter")
    await expect(messages(bob)).to_have_count(3)
    await expect(alice.locator(".message.mine .receipt").last).to_have_text("Read")
    await keep_typing_until_seen(bob, alice, "See you tomorrow")
    await alice.mouse.move(0, 0)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    await alice.screenshot(path=str(DOCS_IMG / "chat.png"))


async def test_a_message_sent_while_the_conversation_is_closed_is_counted_and_shown(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    bob = await open_page("bob")
    for text in ["one", "two"]:
        response = await api.post(
            "/api/messages/send", json={"recipient_id": "bob", "body": text}, headers=auth("carol")
        )
        assert response.status_code == 201
    conversation = bob.locator(".conversation-item", has_text="carol")
    await expect(conversation.locator(".pill")).to_have_text("2")
    await expect(conversation.locator(".conversation-preview")).to_have_text("two")
    await open_conversation(bob, "carol")
    await expect(messages(bob)).to_have_text(["one", "two"])
    await expect(conversation.locator(".pill")).to_have_count(0)


async def test_message_body_renders_as_text(open_page: OpenPage) -> None:
    payloads = ["<img src=x onerror=window.__xss=1>", "<script>window.__xss=2</script>"]
    alice = await open_page("alice")
    bob = await open_page("bob")
    await open_conversation(alice, "bob")
    await open_conversation(bob, "alice")
    for payload in payloads:
        await alice.get_by_test_id("chat-input").fill(payload)
        await alice.get_by_test_id("chat-send").click()
    for page in (alice, bob):
        await expect(messages(page)).to_have_count(2)
        assert await messages(page).all_text_contents() == payloads
        assert await page.locator("#messages img, #messages script").count() == 0
        preview = page.locator(".conversation-preview")
        await expect(preview).to_have_text(re.compile(re.escape(payloads[1]) + "$"))
        assert await page.evaluate("window.__xss") is None


async def test_conversation_history_loads_older_messages_on_scroll(
    open_page: OpenPage, api: httpx.AsyncClient
) -> None:
    for i in range(40):
        response = await api.post(
            "/api/messages/send",
            json={"recipient_id": "alice", "body": f"message {i}"},
            headers=auth("bob"),
        )
        assert response.status_code == 201
    alice = await open_page("alice")
    await open_conversation(alice, "bob")
    await expect(messages(alice)).to_have_count(30)
    await expect(messages(alice).last).to_have_text("message 39")
    await alice.locator("#messages-more").scroll_into_view_if_needed()
    await expect(messages(alice)).to_have_count(40)
    assert await messages(alice).all_text_contents() == [f"message {i}" for i in range(40)]


async def test_chat_refuses_yourself_and_talks_to_identity_provider_ids(
    open_page: OpenPage,
) -> None:
    alice = await open_page("alice")
    await open_conversation(alice, "alice")
    await expect(alice.locator("#chat-error")).to_have_text("That's you.")
    # An id with |, a space, / and % travels as one percent-encoded path segment.
    await open_conversation(alice, "auth0|ann smith/100%")
    await expect(alice.locator("#chat-error")).to_have_text("")
    await alice.get_by_test_id("chat-input").fill("Hello there")
    await alice.get_by_test_id("chat-input").press("Enter")
    await expect(messages(alice)).to_have_text(["Hello there"])
    listed = alice.locator(".conversation-item", has_text="auth0|ann smith/100%")
    await expect(listed).to_have_count(1)
