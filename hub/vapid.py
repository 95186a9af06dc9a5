"""The hub's VAPID identity (RFC 8292): the P-256 key that signs web pushes.

The key comes from ``HUB_VAPID_PRIVATE_KEY`` (a base64url raw 32-byte private key, as
``web-push generate-vapid-keys`` and most guides print, or a PEM EC key), with
``HUB_VAPID_SUBJECT``. In demo mode without one, a key is generated once and kept in
``HUB_DATA_DIR/vapid_private_key`` (0600), so browsers' subscriptions survive restarts.
Without either, ``resolve`` returns None: web push is off.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from hub.settings import Settings, SettingsError

#: The subject of demo mode's generated key when ``HUB_VAPID_SUBJECT`` is unset.
DEMO_SUBJECT = "mailto:notifyhub@localhost"
#: How long a signed JWT is valid (RFC 8292 allows at most 24 hours) ...
JWT_LIFETIME = 12 * 3600
#: ... and how long before its expiry a fresh one is signed instead of reusing it.
JWT_RENEW_BEFORE = 3600
#: Push-service origins whose JWT is cached; a handful exist (FCM, Mozilla, Apple, ...).
MAX_CACHED_AUDIENCES = 64


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError on anything else."""
    if not text or any(c not in _B64URL for c in text.rstrip("=")):
        raise ValueError("is not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except ValueError:
        raise ValueError("is not base64url") from None


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from base64url raw bytes (32) or PEM; ValueError otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except Exception:
            raise ValueError("is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("must be a P-256 (prime256v1) EC key")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("must be a base64url 32-byte P-256 private key or a PEM EC key")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise ValueError("is not a valid P-256 private key") from None


def public_key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed public point (65 bytes, 0x04 first)."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


@dataclass
class Vapid:
    """Signs ``Authorization: vapid t=<JWT>, k=<public key>`` headers for push services."""

    key: ec.EllipticCurvePrivateKey
    subject: str
    _cache: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)

    @property
    def public_key(self) -> str:
        """The base64url public point a browser's ``applicationServerKey`` takes."""
        return b64url(public_key_bytes(self.key))

    def authorization(self, endpoint: str) -> str:
        """The ``Authorization`` header for a push to ``endpoint`` (``aud``: its origin).

        The signed JWT is reused for its origin until an hour before it expires.
        """
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._cache.get(audience)
        if cached is None or cached[1] - now < JWT_RENEW_BEFORE:
            expires = int(now) + JWT_LIFETIME
            token = jwt.encode(
                {"aud": audience, "exp": expires, "sub": self.subject},
                self.key,
                algorithm="ES256",
                headers={"typ": "JWT"},
            )
            if len(self._cache) >= MAX_CACHED_AUDIENCES:
                self._cache.clear()
            cached = self._cache[audience] = (token, float(expires))
        return f"vapid t={cached[0]}, k={self.public_key}"


def resolve(settings: Settings) -> Vapid | None:
    """The configured VAPID identity; demo mode's kept key; or None (push is off)."""
    if settings.vapid_private_key:
        assert settings.vapid_subject is not None  # checked by Settings
        return Vapid(load_private_key(settings.vapid_private_key), settings.vapid_subject)
    if not settings.demo_mode:
        return None
    return Vapid(_demo_key(settings), settings.vapid_subject or DEMO_SUBJECT)


def _demo_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    path = settings.data_dir / "vapid_private_key"
    try:
        try:
            return load_private_key(path.read_text())
        except FileNotFoundError:
            pass
        except ValueError:
            raise SettingsError(
                f"HUB_DATA_DIR: {path} does not hold a VAPID key; delete it to make a new one"
            ) from None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        text = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
        # Written whole under a temporary name, then linked into place (which fails if
        # the name exists): of two processes starting together, both use the first key.
        tmp = path.with_name(f".vapid_private_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return load_private_key(path.read_text())
    except OSError as exc:
        raise SettingsError(
            f"HUB_DATA_DIR: cannot keep the demo VAPID key in {path}: {exc.strerror or exc}"
        ) from None
