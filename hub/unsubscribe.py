"""One-click unsubscribe (RFC 8058): signed links that turn one type's email off.

A link is ``<HUB_PUBLIC_URL>/api/unsubscribe?token=<token>``; the token names a user
and a notification type and is signed with HMAC-SHA256, so only the hub can make one
and whoever holds it can do exactly one thing: turn that user's ``email`` off for that
type (docs/delivery.md, "Email"). Tokens do not expire: a link in a year-old email
still works, as mail providers expect.

The key is derived from ``HUB_UNSUBSCRIBE_SECRET``, else ``HUB_JWT_SECRET``, else (demo
mode) the demo secret; changing that secret invalidates every link already sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import quote

import orjson

from hub import preferences
from hub.errors import InvalidInput
from hub.models import Preferences, PreferencesPatch, valid_user_id
from hub.services import Services
from hub.settings import Settings, demo_secret

#: The path of the unsubscribe route (api/unsubscribe.py), under HUB_PUBLIC_URL.
PATH = "/api/unsubscribe"
#: Tokens longer than this are refused unread (a user id is at most 255 characters).
MAX_TOKEN = 2048
_VERSION = "u1"
_BAD = "invalid unsubscribe token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeLinks:
    """Makes and checks unsubscribe tokens and links for one hub's settings."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.unsubscribe_secret or settings.jwt_secret
        if secret is None and settings.demo_mode:
            secret = demo_secret(settings)
        # Derived, so a token can never be mistaken for anything else the secret signs.
        self._key = None if secret is None else hmac.digest(
            secret.encode(), b"notifyhub unsubscribe v1", "sha256")
        self._base = settings.public_url

    def _sign(self, payload: str) -> str:
        assert self._key is not None
        return _b64(hmac.digest(self._key, f"{_VERSION}.{payload}".encode(), "sha256"))

    def token(self, user_id: str, type_: str) -> str:
        """A token that unsubscribes ``user_id`` from email about ``type_``."""
        if self._key is None:
            raise RuntimeError("no secret to sign unsubscribe links (HUB_UNSUBSCRIBE_SECRET)")
        payload = _b64(orjson.dumps([user_id, type_]))
        return f"{_VERSION}.{payload}.{self._sign(payload)}"

    def url(self, user_id: str, type_: str) -> str:
        """The link for ``token(user_id, type_)``; needs ``HUB_PUBLIC_URL``."""
        if self._base is None:
            raise RuntimeError("unsubscribe links need HUB_PUBLIC_URL")
        return f"{self._base}{PATH}?token={quote(self.token(user_id, type_), safe='')}"

    def verify(self, token: str | None) -> tuple[str, str]:
        """``(user_id, type)`` of a token this hub signed; InvalidInput for anything else."""
        if not token or len(token) > MAX_TOKEN or self._key is None:
            raise InvalidInput(_BAD, [{"loc": ["query", "token"], "msg": _BAD}])
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != _VERSION or not hmac.compare_digest(
            signature.encode(), self._sign(payload).encode()
        ):
            raise InvalidInput(_BAD, [{"loc": ["query", "token"], "msg": _BAD}])
        try:
            user_id, type_ = orjson.loads(_unb64(payload))
        except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
            raise InvalidInput(_BAD, [{"loc": ["query", "token"], "msg": _BAD}]) from None
        if not valid_user_id(user_id) or not isinstance(type_, str) or not type_:
            raise InvalidInput(_BAD, [{"loc": ["query", "token"], "msg": _BAD}])
        return user_id, type_


async def unsubscribe(svc: Services, user_id: str, type_: str) -> Preferences:
    """Turn ``user_id``'s email off for ``type_`` (the rest of their preferences stays)."""
    change = PreferencesPatch.model_validate({"types": {type_: {"email": False}}})
    return await preferences.patch(svc, user_id, change)
