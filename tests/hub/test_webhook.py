"""The webhook and SMS channels against a receiver on loopback that verifies signatures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hub.channels import Delivery, Permanent, Temporary
from hub.channels.webhook import (
    SMS_MAX_CHARS,
    RetryLater,
    SmsChannel,
    WebhookChannel,
    sms_text,
    truncate,
)
from hub.channels.webhook_signing import InvalidSignature, verify
from hub.settings import SettingsError, load_settings
from tests.conftest import SERVICE, auth, running_app
from tests.waiting import eventually

T = 10.0
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records what is POSTed and answers from ``answers``
    (then 204), after checking each request's signature with both verifiers."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    #: ``(status, headers, body, delay seconds)`` for the next requests, in order.
    answers: list[tuple[int, dict[str, str], bytes, float]] = field(default_factory=list)
    #: Per request: None when both verifiers accepted it, else what they said.
    verdicts: list[str | None] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        self.received.append(Received(headers, body))
        try:
            verify(SECRET, headers, body)
            Webhook(SECRET).verify(body, headers)
            self.verdicts.append(None)
        except (InvalidSignature, WebhookVerificationError) as exc:
            self.verdicts.append(str(exc))
        status, extra, answer, delay = self.answers.pop(0) if self.answers else (204, {}, b"", 0)
        await asyncio.sleep(delay)
        return Response(answer, status_code=status, headers=extra)


async def drip(request: Request) -> Response:
    """Answers 200 one byte every 0.2 s, for 5 s: never idle long, never done soon."""
    await request.body()

    async def bytes_slowly() -> AsyncIterator[bytes]:
        for _ in range(25):
            yield b"."
            await asyncio.sleep(0.2)

    return StreamingResponse(bytes_slowly())


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A Receiver served by uvicorn on an ephemeral port until the block ends; ``/drip``
    beside its ``url`` answers slowly."""
    rec = Receiver()
    app = Starlette(
        routes=[
            Route("/hook", rec.handle, methods=["POST"]),
            Route("/drip", drip, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(T):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        rec.url = f"http://127.0.0.1:{port}/hook"
        yield rec
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, T)


def delivery(
    channel: str = "webhook", *, id: int = 41, attempt: int = 1, **contact: Any
) -> Delivery:
    notification = {
        "id": 7,
        "user_id": "alice",
        "type": "grade_posted",
        "title": "Grade posted",
        "body": "Your grade for Essay 2 is A-",
        "link": "/grades/5",
        "data": {"assignment": "Essay 2", "grade": "A-", "grade_id": 5},
        "priority": "normal",
        "created_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    }
    return Delivery(id, channel, attempt, notification, contact)


async def test_webhook_posts_a_signed_notification_created_event_both_verifiers_accept():
    async with receiver() as rec:
        channel = WebhookChannel(rec.url, SECRET)
        try:
            before = int(time.time())
            await asyncio.wait_for(channel.send(delivery(email="a@example.com")), T)
        finally:
            await channel.close()
    [got] = rec.received
    assert rec.verdicts == [None]
    assert got.headers["webhook-id"] == "dlv_41"
    assert before - 5 <= int(got.headers["webhook-timestamp"]) <= time.time() + 5
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.headers["content-type"] == "application/json"
    event = orjson.loads(got.body)
    assert event["type"] == "notification.created"
    assert event["timestamp"] == "2025-03-01T12:00:00+00:00"
    assert event["data"]["id"] == 7 and event["data"]["user_id"] == "alice"
    assert event["data"]["title"] == "Grade posted"
    assert event["data"]["data"] == {"assignment": "Essay 2", "grade": "A-", "grade_id": 5}
    assert event["data"]["contact"] == {"email": "a@example.com"}


async def test_a_tampered_body_an_old_timestamp_or_another_secret_fail_verification():
    async with receiver() as rec:
        channel = WebhookChannel(rec.url, SECRET)
        try:
            await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()
    [got] = rec.received
    verify(SECRET, got.headers, got.body)
    tampered = got.body.replace(b"Essay 2", b"Essay 3")
    with pytest.raises(InvalidSignature):
        verify(SECRET, got.headers, tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, got.headers)
    with pytest.raises(InvalidSignature, match="too old"):
        verify(SECRET, got.headers, got.body, now=time.time() + 600)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(InvalidSignature, match="no matching"):
        verify(other, got.headers, got.body)
    with pytest.raises(InvalidSignature, match="missing"):
        verify(SECRET, {"webhook-id": "dlv_41"}, got.body)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_a_5xx_408_or_429_answer_is_temporary_and_keeps_retry_after(status):
    async with receiver() as rec:
        rec.answers.append((status, {"Retry-After": "7"}, b"busy, try later", 0))
        channel = WebhookChannel(rec.url, SECRET)
        try:
            with pytest.raises(Temporary) as caught:
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()
    assert isinstance(caught.value, RetryLater)
    assert caught.value.retry_after == 7
    assert str(caught.value) == f"the receiver answered {status}: busy, try later"


async def test_a_410_answer_is_permanent():
    async with receiver() as rec:
        rec.answers.append((410, {}, b"", 0))
        channel = WebhookChannel(rec.url, SECRET)
        try:
            with pytest.raises(Permanent, match="410"):
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_another_4xx_answer_is_permanent_with_the_status_and_a_short_excerpt(status):
    async with receiver() as rec:
        rec.answers.append((status, {}, b"unknown field\n'foo' " + b"x" * 1_000_000, 0))
        channel = WebhookChannel(rec.url, SECRET)
        try:
            with pytest.raises(Permanent) as caught:
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()
    reason = str(caught.value)
    assert reason.startswith(f"the receiver answered {status}: unknown field 'foo' xxx")
    assert len(reason) < 250


async def test_a_redirect_is_not_followed_and_is_permanent():
    async with receiver() as rec:
        rec.answers.append((301, {"Location": "http://127.0.0.1:1/elsewhere"}, b"", 0))
        channel = WebhookChannel(rec.url, SECRET)
        try:
            with pytest.raises(Permanent, match="301.*redirects are not followed"):
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()
    assert len(rec.received) == 1


async def test_a_receiver_that_is_down_or_too_slow_is_temporary():
    async with receiver() as rec:
        url = rec.url
    channel = WebhookChannel(url, SECRET)  # the receiver has stopped: connection refused
    try:
        with pytest.raises(Temporary, match="could not reach the receiver"):
            await asyncio.wait_for(channel.send(delivery()), T)
    finally:
        await channel.close()
    async with receiver() as rec:
        rec.answers.append((204, {}, b"", 3.0))
        channel = WebhookChannel(rec.url, SECRET, timeout=0.5)
        try:
            with pytest.raises(Temporary, match="did not answer in time"):
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()


async def test_a_receiver_that_answers_drop_by_drop_is_cut_off_at_the_timeout():
    async with receiver() as rec:
        channel = WebhookChannel(rec.url.replace("/hook", "/drip"), SECRET, timeout=1.0)
        try:
            # Had it waited for the whole (200) answer, send would have returned.
            with pytest.raises(Temporary, match="did not answer in time"):
                await asyncio.wait_for(channel.send(delivery()), T)
        finally:
            await channel.close()


async def test_the_webhook_id_is_the_same_on_a_retry_of_the_same_delivery():
    async with receiver() as rec:
        rec.answers.append((500, {}, b"", 0))
        channel = WebhookChannel(rec.url, SECRET)
        try:
            with pytest.raises(Temporary):
                await asyncio.wait_for(channel.send(delivery(id=99, attempt=1)), T)
            await asyncio.wait_for(channel.send(delivery(id=99, attempt=2)), T)
            await asyncio.wait_for(channel.send(delivery(id=100)), T)
        finally:
            await channel.close()
    ids = [got.headers["webhook-id"] for got in rec.received]
    assert ids == ["dlv_99", "dlv_99", "dlv_100"]
    assert rec.verdicts == [None, None, None]
    assert rec.received[0].body == rec.received[1].body


async def test_sms_posts_the_phone_and_a_text_of_at_most_160_characters():
    long = delivery("sms", phone="+44 20 7946 0958")
    long.notification.update(type="custom", title="Very long title " * 20, body="and a body")
    async with receiver() as rec:
        channel = SmsChannel(rec.url, SECRET)
        try:
            await asyncio.wait_for(channel.send(delivery("sms", phone="+15551234567")), T)
            await asyncio.wait_for(channel.send(long), T)
        finally:
            await channel.close()
    assert rec.verdicts == [None, None]
    first, second = (orjson.loads(got.body) for got in rec.received)
    assert first == {"type": "sms", "to": "+15551234567", "text": "Grade posted for Essay 2: A-"}
    assert second["to"] == "+442079460958"
    assert len(second["text"]) == SMS_MAX_CHARS
    assert second["text"].startswith("Very long title Very long title")
    assert second["text"].endswith("…")


@pytest.mark.parametrize("contact", [{}, {"email": "a@example.com"}, {"phone": "555-1234"}])
async def test_sms_without_a_usable_phone_is_permanent_and_posts_nothing(contact):
    async with receiver() as rec:
        channel = SmsChannel(rec.url, SECRET)
        try:
            with pytest.raises(Permanent, match="phone number"):
                await asyncio.wait_for(channel.send(delivery("sms", **contact)), T)
        finally:
            await channel.close()
    assert rec.received == []


def test_sms_text_uses_the_types_template_and_falls_back_to_title_and_body():
    grade = delivery().notification
    assert sms_text(grade) == "Grade posted for Essay 2: A-"
    missing = {**grade, "data": {}}
    assert sms_text(missing) == "Grade posted: Your grade for Essay 2 is A-"
    other = {**grade, "type": "custom", "body": "", "title": "Line\none"}
    assert sms_text(other) == "Line one"
    announcement = {**grade, "type": "system_announcement", "title": "Closed", "body": "Snow"}
    assert sms_text(announcement) == "Closed: Snow"


def test_truncation_keeps_combining_marks_with_their_letter():
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"
    accented = "ab" + "e\u0301" * 3  # é as e + a combining acute
    assert truncate(accented, 4) == "ab…"
    assert truncate(accented, 5) == "abe\u0301…"
    assert len(truncate("x" * 500, SMS_MAX_CHARS)) == SMS_MAX_CHARS


def test_a_webhook_url_needs_a_valid_secret_and_an_http_url():
    with pytest.raises(SettingsError, match="HUB_WEBHOOK_SECRET: is required"):
        load_settings(webhook_url="https://example.com/hook", webhook_secret="")
    with pytest.raises(SettingsError, match="HUB_WEBHOOK_SECRET: is required"):
        load_settings(sms_webhook_url="https://example.com/sms", webhook_secret="")
    with pytest.raises(SettingsError, match="HUB_WEBHOOK_SECRET: must start with whsec_"):
        load_settings(webhook_url="https://example.com/hook", webhook_secret="hunter2")
    with pytest.raises(SettingsError, match="HUB_WEBHOOK_SECRET: must hold 24-64 bytes"):
        load_settings(webhook_url="https://example.com/hook", webhook_secret="whsec_YWJj")
    with pytest.raises(SettingsError, match="HUB_SMS_WEBHOOK_URL: must be an http"):
        load_settings(sms_webhook_url="ftp://example.com", webhook_secret=SECRET)
    settings = load_settings(sms_webhook_url="https://example.com/sms", webhook_secret=SECRET)
    assert SmsChannel.configured(settings) and not WebhookChannel.configured(settings)
    assert not WebhookChannel.configured(load_settings())


async def test_a_notification_created_over_rest_reaches_the_receiver_as_webhook_and_sms(
    settings_env,
):
    async with receiver() as rec, running_app(
        **settings_env,
        webhook_url=rec.url,
        sms_webhook_url=rec.url,
        webhook_secret=SECRET,
        delivery_poll_seconds=0.1,
    ) as app, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=T
    ) as client:
        r = await client.patch(
            "/api/notifications/preferences",
            json={"channels": {"sms": True, "webhook": True}},
            headers=auth("alice"),
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            "/api/notifications",
            json={
                "user_id": "alice", "type": "grade_posted", "template": "grade_posted",
                "data": {"assignment": "Essay 2", "grade": "A-", "grade_id": 5},
                "contact": {"phone": "+15551234567"},
            },
            headers=SERVICE,
        )
        assert r.status_code == 201, r.text
        created = r.json()["items"][0]

        async def both_sent() -> bool:
            r = await client.get(
                f"/api/notifications/{created['id']}/deliveries", headers=SERVICE
            )
            states = {d["channel"]: d["state"] for d in r.json()["items"]}
            return states == {"sms": "sent", "webhook": "sent"}

        await eventually(both_sent)
    assert rec.verdicts == [None, None]
    bodies = {(body := orjson.loads(got.body))["type"]: body for got in rec.received}
    assert bodies["sms"] == {
        "type": "sms", "to": "+15551234567", "text": "Grade posted for Essay 2: A-"
    }
    event = bodies["notification.created"]
    assert event["data"]["id"] == created["id"] and event["data"]["user_id"] == "alice"
    assert event["data"]["title"] == "Grade posted"
    assert event["data"]["contact"] == {"phone": "+15551234567"}
    assert all(got.headers["webhook-id"].startswith("dlv_") for got in rec.received)


async def test_a_receivers_retry_after_sets_the_wait_before_the_next_attempt(settings_env):
    async with receiver() as rec, running_app(
        **settings_env,
        webhook_url=rec.url,
        webhook_secret=SECRET,
        delivery_poll_seconds=0.1,
        delivery_backoff_seconds=0.05,
        delivery_backoff_max_seconds=0.2,
    ) as app, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=T
    ) as client:
        rec.answers.append((503, {"Retry-After": "3600"}, b"down for maintenance", 0))
        r = await client.patch(
            "/api/notifications/preferences", json={"channels": {"webhook": True}},
            headers=auth("bob"),
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            "/api/notifications", json={"user_id": "bob", "type": "t", "title": "Hi"},
            headers=SERVICE,
        )
        assert r.status_code == 201, r.text
        notification_id = r.json()["items"][0]["id"]

        async def retried() -> dict[str, Any] | None:
            r = await client.get(
                f"/api/notifications/{notification_id}/deliveries", headers=SERVICE
            )
            [item] = r.json()["items"]
            return item if item["last_error"] else None

        item = await eventually(retried)
    assert item["state"] == "scheduled" and item["attempts"] == 1
    assert item["last_error"] == "the receiver answered 503: down for maintenance"
    wait = datetime.fromisoformat(item["next_attempt_at"]) - datetime.now(UTC)
    assert wait.total_seconds() > 3000  # the backoff alone would be under a second
    assert len(rec.received) == 1
