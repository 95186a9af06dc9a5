"""Users' web push subscriptions: the browser's ``PushSubscription``, checked and stored.

A subscription is what ``pushManager.subscribe()`` returns, as JSON: the push service's
``endpoint`` URL, the browser's P-256 public key ``p256dh`` (65 bytes, uncompressed) and
its 16-byte ``auth`` secret, both base64url. The endpoint identifies it: subscribing an
endpoint again updates it (and moves it to the caller, when a browser changes users).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from db import push as store
from hub.errors import InvalidInput, NotFound
from hub.models import Strict
from hub.services import Services
from hub.settings import Settings
from hub.vapid import b64url_decode

#: The most subscriptions (browsers, devices) one user keeps; subscribing one more drops
#: their oldest.
MAX_PER_USER = 20
#: The longest endpoint URL accepted (real ones are 150-500 characters).
MAX_ENDPOINT_CHARS = 2048
MAX_USER_AGENT_CHARS = 512
LOOPBACK_NAMES = ("localhost",)


class PushKeys(Strict):
    p256dh: str = Field(max_length=128)
    auth: str = Field(max_length=64)

    @field_validator("p256dh")
    @classmethod
    def _p256dh(cls, value: str) -> str:
        raw = _decode(value)
        if len(raw) != 65 or raw[0] != 0x04:
            raise ValueError("must be a base64url uncompressed P-256 point (65 bytes, 0x04 first)")
        return value.rstrip("=")

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if len(_decode(value)) != 16:
            raise ValueError("must be a base64url 16-byte secret")
        return value.rstrip("=")


def _decode(value: str) -> bytes:
    try:
        return b64url_decode(value)
    except ValueError:
        raise ValueError("is not base64url") from None


class PushSubscriptionIn(Strict):
    """The browser's ``PushSubscription.toJSON()``."""

    endpoint: str = Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)
    expirationTime: int | float | None = None  # the browser's name (ms since the epoch)
    keys: PushKeys


class PushUnsubscribe(Strict):
    endpoint: str = Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)


class PushSubscriptionOut(BaseModel):
    """A stored subscription, as ``POST /api/push/subscriptions`` returns it."""

    id: int
    endpoint: str
    created_at: Any


class VapidPublicKey(BaseModel):
    public_key: str


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) names this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _internal_address(host: str) -> bool:
    """Whether ``host`` is a loopback name or an IP address that is not public."""
    if is_loopback(host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def check_endpoint(endpoint: str, allow_http_loopback: bool) -> str:
    """``endpoint`` if it is a push service URL the hub may POST to; InvalidInput if not.

    Push services are ``https://``; ``http://`` only to a loopback host, and only when
    ``allow_http_loopback`` (``HUB_PUSH_ALLOW_HTTP_LOOPBACK`` or demo mode).
    """
    def refuse(msg: str) -> InvalidInput:
        return InvalidInput("the subscription is not valid",
                            [{"loc": ["endpoint"], "msg": msg}])

    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in endpoint):
        raise refuse("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise refuse("is not a URL") from None
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.password is not None:
        raise refuse("must be an https:// URL with a host and no credentials")
    if parts.fragment:
        raise refuse("must not have a #fragment")
    if parts.scheme == "https":
        if _internal_address(host):
            # The hub would POST wherever a user points it: never to its own networks.
            raise refuse("must be a push service on the internet, not an internal address")
        return endpoint
    if parts.scheme == "http" and allow_http_loopback and is_loopback(host):
        return endpoint
    raise refuse("must be an https:// URL" + (
        " (or http:// to a loopback host)" if allow_http_loopback else ""))


def allow_http_loopback(settings: Settings) -> bool:
    """Whether ``http://`` endpoints on a loopback host are accepted (tests, the demo)."""
    return settings.push_allow_http_loopback or settings.demo_mode


async def subscribe(
    svc: Services, user_id: str, sub: PushSubscriptionIn, user_agent: str | None
) -> dict[str, Any]:
    """Store ``sub`` for ``user_id`` (idempotent on its endpoint); the stored row."""
    endpoint = check_endpoint(sub.endpoint, allow_http_loopback(svc.settings))
    agent = user_agent[:MAX_USER_AGENT_CHARS] if user_agent else None
    async with svc.pool.acquire() as conn, conn.transaction():
        row = await store.upsert(conn, user_id, endpoint, sub.keys.p256dh, sub.keys.auth,
                                 agent, keep=MAX_PER_USER)
    return {"id": row["id"], "endpoint": row["endpoint"], "created_at": row["created_at"]}


async def unsubscribe(svc: Services, user_id: str, endpoint: str) -> bool:
    """Delete ``user_id``'s subscription with ``endpoint``; whether there was one."""
    return await store.delete_for_user(svc.pool, user_id, endpoint)


def require_configured(vapid: object | None) -> None:
    """NotFound (404) when web push is off."""
    if vapid is None:
        raise NotFound("web push is not configured on this hub (HUB_VAPID_PRIVATE_KEY)")
