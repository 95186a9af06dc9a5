"""One-click unsubscribe (RFC 8058): signed links that turn one type's email, or all
email, off.

A link is ``<HUB_PUBLIC_URL>/api/unsubscribe?token=<token>``; the token names a user
and a notification type (or none: all email, the link of a digest) and is signed with
HMAC-SHA256, so only the hub can make one and whoever holds it can do exactly one
thing: turn that user's ``email`` off for that type, or for every type
(docs/delivery.md, "Email" and "Digests"). Tokens do not expire: a link in a year-old
email still works, as mail providers expect.

The key is derived from ``HUB_UNSUBSCRIBE_SECRET``, else ``HUB_JWT_SECRET``, else (demo
mode) the demo secret; changing that secret invalidates every link already sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import quote

import orjson

from db import digests as digest_store
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

    def token(self, user_id: str, type_: str | None) -> str:
        """A token that unsubscribes ``user_id`` from email about ``type_`` (None: from
        all email)."""
        if self._key is None:
            raise RuntimeError("no secret to sign unsubscribe links (HUB_UNSUBSCRIBE_SECRET)")
        payload = _b64(orjson.dumps([user_id, type_]))
        return f"{_VERSION}.{payload}.{self._sign(payload)}"

    def url(self, user_id: str, type_: str | None) -> str:
        """The link for ``token(user_id, type_)``; needs ``HUB_PUBLIC_URL``."""
        if self._base is None:
            raise RuntimeError("unsubscribe links need HUB_PUBLIC_URL")
        return f"{self._base}{PATH}?token={quote(self.token(user_id, type_), safe='')}"

    def verify(self, token: str | None) -> tuple[str, str | None]:
        """``(user_id, type)`` of a token this hub signed (type None: all email);
        InvalidInput for anything else."""
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
        if not valid_user_id(user_id) or not (type_ is None or isinstance(type_, str) and type_):
            raise InvalidInput(_BAD, [{"loc": ["query", "token"], "msg": _BAD}])
        return user_id, type_


async def unsubscribe(svc: Services, user_id: str, type_: str | None) -> Preferences:
    """Turn ``user_id``'s email off for ``type_`` (the rest of their preferences stays).

    ``type_`` None: all email (a digest's link): ``channels.email`` off, and off for
    every type that turned it on for itself; their digests not yet begun are skipped
    (``unsubscribed``), so none comes after the click.
    """
    if type_ is not None:
        change = PreferencesPatch.model_validate({"types": {type_: {"email": False}}})
        return await preferences.patch(svc, user_id, change)
    async with svc.write() as work:
        stored = await preferences.load_for_update(work.conn, user_id)
        doc = stored.model_dump(mode="json")
        doc["channels"]["email"] = False
        for channels in doc["types"].values():
            if channels.get("email"):
                channels["email"] = False
        result = await preferences.save(work.conn, user_id, Preferences.load(doc), stored)
        await digest_store.cancel(work.conn, user_id, "unsubscribed")
    return result
