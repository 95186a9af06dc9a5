"""User tokens: JWTs issued (HS256) and verified (HS256, RS256 or ES256)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from hub.errors import Unauthorized
from hub.models import USER_ID_RULE, valid_user_id
from hub.settings import Settings, demo_secret

#: Clock-skew leeway for ``exp``, ``nbf`` and ``iat`` unless ``HUB_JWT_LEEWAY_SECONDS``
#: says otherwise.
LEEWAY_SECONDS = 30
#: The latest ``exp`` accepted: 9999-12-31T23:59:59Z (anything later is not a time).
MAX_EXP = 253_402_300_799


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a verified token speaks for, and until when."""

    user_id: str
    admin: bool
    expires_at: float


class Tokens:
    """Issues and verifies user JWTs with the configured key and algorithm."""

    def __init__(self, settings: Settings) -> None:
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._issuer = settings.jwt_issuer
        if settings.jwt_public_key:
            self._signing_key: str | None = None
            self._verify_key = settings.jwt_public_key
            self.algorithm = _public_key_algorithm(settings.jwt_public_key)
        else:
            secret = settings.jwt_secret or demo_secret(settings)
            self._signing_key = self._verify_key = secret
            self.algorithm = "HS256"

    def issue(self, user_id: str, *, admin: bool = False, ttl: int = 3600, **claims: Any) -> str:
        """A token for ``user_id`` valid ``ttl`` seconds (HS256 deployments only)."""
        if self._signing_key is None:
            raise Unauthorized("tokens are issued by your identity provider (HUB_JWT_PUBLIC_KEY)")
        now = int(time.time())
        payload: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl}
        if admin:
            payload["roles"] = ["admin"]
        if self._audience:
            payload["aud"] = self._audience
        if self._issuer:
            payload["iss"] = self._issuer
        payload.update(claims)
        return jwt.encode(payload, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; Unauthorized for anything else.

        ``exp`` is required, ``nbf`` and ``iat`` are checked when present, each with
        ``HUB_JWT_LEEWAY_SECONDS`` of leeway for clocks that disagree; ``sub`` must be a
        user id (``hub.models.valid_user_id``).
        """
        try:
            payload = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError,
                jwt.ImmatureSignatureError, jwt.InvalidSignatureError,
                jwt.InvalidAlgorithmError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        except (jwt.PyJWTError, OverflowError, ValueError, TypeError):
            raise Unauthorized("invalid token") from None
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp <= MAX_EXP:
            raise Unauthorized("invalid token: exp is not a time before the year 10000")
        sub = payload.get("sub")
        if not valid_user_id(sub):
            raise Unauthorized(f"invalid token: sub is not a user id: {USER_ID_RULE}")
        roles = payload.get("roles")
        admin = isinstance(roles, list) and "admin" in roles
        return Claims(user_id=sub, admin=admin, expires_at=float(exp))


def _public_key_algorithm(pem: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    return "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "RS256"
