"""The ``webhook`` and ``sms`` channels: signed JSON POSTs (docs/delivery.md, "Webhooks and SMS").

``webhook`` posts every delivery to ``HUB_WEBHOOK_URL`` as a Standard Webhooks event
(``notification.created``); ``sms`` posts ``{"type": "sms", "to", "text"}`` to
``HUB_SMS_WEBHOOK_URL`` for a bridge to an SMS provider, the text rendered from the
type's SMS template and cut to 160 characters. Both sign with ``HUB_WEBHOOK_SECRET``.

How the receiver's answer maps to the outcomes of ``hub.channels``:

    2xx                         sent
    410                         Permanent (the receiver wants no more)
    3xx, other 4xx              Permanent (redirects are not followed)
    408, 429, 5xx, no answer    RetryLater, a Temporary (``retry_after`` from Retry-After)
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from hub.channels import Delivery, Permanent, Temporary
from hub.channels.webhook_signing import decode_secret, sign_headers
from hub.errors import InvalidInput
from hub.services import Services
from hub.settings import Settings
from hub.templates import render

#: Concurrent requests one channel makes (further sends wait for a free connection).
MAX_CONNECTIONS = 20
#: The longest wait for a TCP (and TLS) connection to the receiver.
CONNECT_TIMEOUT = 5.0
#: How much of a receiver's answer is read (the rest is dropped with the connection).
MAX_ANSWER_BYTES = 64 * 1024
#: How much of a refusal's body goes into the recorded reason.
EXCERPT_CHARS = 200
#: The longest Retry-After honoured.
MAX_RETRY_AFTER = 24 * 3600.0

SMS_MAX_CHARS = 160
#: The SMS text of each seed type; other types get ``DEFAULT_SMS_TEMPLATE``. Names are
#: the notification's ``data`` plus its rendered ``title`` and ``body``.
SMS_TEMPLATES = {
    "assignment_created": "New assignment in {course}: {assignment}, due {due_date}",
    "assignment_due_soon": "Due soon in {course}: {assignment}, due {due_date}",
    "grade_posted": "Grade posted for {assignment}: {grade}",
    "friend_request": "{sender_name} sent you a friend request",
    "group_invitation": "{inviter_name} invited you to join {group_name}",
    "achievement_unlocked": "Achievement unlocked: {achievement}",
    "study_goal_milestone": "Milestone reached on {goal}: {milestone}",
    "new_message": "Message from {sender_id}: {preview}",
    "system_announcement": "{title}: {body}",
}
DEFAULT_SMS_TEMPLATE = "{title}: {body}"

# Marks that belong to the character before them: a cut never leaves them dangling.
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}


class RetryLater(Temporary):
    """The receiver did not take the delivery this time; ``retry_after`` is the delay it
    asked for in ``Retry-After`` (seconds), or None."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _SignedPoster:
    """Signs and POSTs JSON bodies to one URL through a bounded connection pool."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._key = decode_secret(secret)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            follow_redirects=False,
            headers={"user-agent": "notifyhub", "content-type": "application/json"},
        )

    async def post(self, delivery_id: int, body: bytes) -> None:
        """Send ``body`` signed as message ``dlv_<delivery_id>`` (the same on every
        attempt, the receiver's idempotency key), stamped now; raise as the answer says."""
        headers = sign_headers(self._key, f"dlv_{delivery_id}", int(time.time()), body)
        try:
            # httpx's timeouts bound each step (connect, each write or read); this bounds
            # the whole request, so a receiver that answers drop by drop cannot hold it.
            async with asyncio.timeout(self.timeout), self._client.stream(
                "POST", self.url, content=body, headers=headers
            ) as response:
                answer = await _read_some(response)
        except (TimeoutError, httpx.TimeoutException) as exc:
            reason = f"the receiver did not answer in time ({type(exc).__name__})"
            raise RetryLater(reason) from None
        except httpx.TransportError as exc:
            raise RetryLater(f"could not reach the receiver: {exc or type(exc).__name__}") from None
        _outcome(response, answer)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_some(response: httpx.Response) -> bytes:
    """Up to MAX_ANSWER_BYTES of the answer (reading it lets the connection be reused)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)


def _outcome(response: httpx.Response, answer: bytes) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    said = f"the receiver answered {status}"
    excerpt = " ".join(answer[: EXCERPT_CHARS * 4].decode(errors="replace").split())
    if excerpt:
        said += ": " + excerpt[:EXCERPT_CHARS]
    if status in (408, 429) or status >= 500:
        raise RetryLater(said, _retry_after(response.headers.get("retry-after")))
    if status == 410:
        raise Permanent(f"{said} (Gone: it wants no more deliveries)")
    if 300 <= status < 400:
        raise Permanent(f"{said} (redirects are not followed: set the URL to the final address)")
    if 400 <= status < 500:
        raise Permanent(said)
    raise RetryLater(said)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay seconds or an HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def webhook_body(delivery: Delivery) -> bytes:
    """The ``notification.created`` event: the notification, its ``user_id`` and, when
    known, the recipient's ``contact``."""
    notification = delivery.notification
    data = dict(notification)
    if delivery.contact:
        data["contact"] = delivery.contact
    return orjson.dumps(
        {
            "type": "notification.created",
            "timestamp": notification.get("created_at") or datetime.now(UTC),
            "data": data,
        }
    )


class WebhookChannel:
    """Posts every delivery to ``HUB_WEBHOOK_URL`` as a signed ``notification.created``."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = 15.0) -> None:
        self._poster = _SignedPoster(url, secret, timeout)

    @staticmethod
    def configured(settings: Settings) -> bool:
        """Whether the settings turn this channel on (``HUB_WEBHOOK_URL`` is set)."""
        return settings.webhook_url is not None

    @classmethod
    def make(cls, svc: Services) -> WebhookChannel:
        """The channel for ``svc``'s settings (the delivery registry's factory)."""
        return cls.from_settings(svc.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookChannel:
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        return cls(settings.webhook_url, settings.webhook_secret, settings.webhook_timeout_seconds)

    async def send(self, delivery: Delivery) -> None:
        await self._poster.post(delivery.id, webhook_body(delivery))

    async def close(self) -> None:
        await self._poster.aclose()


def sms_text(notification: dict[str, Any]) -> str:
    """The SMS text of ``notification``: its type's SMS template (or ``{title}: {body}``
    when a name it needs is missing), whitespace collapsed, at most 160 characters."""
    title = str(notification.get("title") or "")
    body = str(notification.get("body") or "")
    data = notification.get("data")
    names = {**(data if isinstance(data, dict) else {}), "title": title, "body": body}
    template = SMS_TEMPLATES.get(str(notification.get("type")), DEFAULT_SMS_TEMPLATE)
    try:
        text = render(template, names)
    except InvalidInput:
        text = render(DEFAULT_SMS_TEMPLATE, names)
    text = " ".join(text.split()).strip(" :")
    return truncate(text or title, SMS_MAX_CHARS)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when cut; a cut
    never separates a combining mark or joiner from the character before it."""
    if len(text) <= limit:
        return text
    cut = limit - 1
    while cut > 0 and (unicodedata.combining(text[cut]) or text[cut] in _JOINERS):
        cut -= 1
    return text[:cut].rstrip() + "…"


def phone_number(contact: dict[str, Any]) -> str:
    """The contact's phone as E.164 (``+`` and 8-15 digits; spaces, dots, dashes and
    parentheses dropped); Permanent when there is none or it is not one."""
    raw = contact.get("phone")
    if not raw or not isinstance(raw, str):
        raise Permanent("no phone number")
    phone = "".join(c for c in raw if c not in " .-()")
    digits = phone[1:]
    if not (phone.startswith("+") and digits.isascii() and digits.isdigit()
            and 8 <= len(digits) <= 15 and digits[0] != "0"):
        raise Permanent("the phone number is not in E.164 form (+ and country code)")
    return phone


def sms_body(delivery: Delivery) -> bytes:
    """``{"type": "sms", "to": "+E164", "text": "…"}``; Permanent without a phone."""
    to = phone_number(delivery.contact)
    return orjson.dumps({"type": "sms", "to": to, "text": sms_text(delivery.notification)})


class SmsChannel:
    """Posts ``{"type": "sms", "to", "text"}`` to ``HUB_SMS_WEBHOOK_URL``, signed."""

    name = "sms"

    def __init__(self, url: str, secret: str, timeout: float = 15.0) -> None:
        self._poster = _SignedPoster(url, secret, timeout)

    @staticmethod
    def configured(settings: Settings) -> bool:
        """Whether the settings turn this channel on (``HUB_SMS_WEBHOOK_URL`` is set)."""
        return settings.sms_webhook_url is not None

    @classmethod
    def make(cls, svc: Services) -> SmsChannel:
        """The channel for ``svc``'s settings (the delivery registry's factory)."""
        return cls.from_settings(svc.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsChannel:
        assert settings.sms_webhook_url is not None and settings.webhook_secret is not None
        return cls(
            settings.sms_webhook_url, settings.webhook_secret, settings.webhook_timeout_seconds
        )

    async def send(self, delivery: Delivery) -> None:
        await self._poster.post(delivery.id, sms_body(delivery))

    async def close(self) -> None:
        await self._poster.aclose()
