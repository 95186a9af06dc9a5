"""Who is calling: a user JWT (header or ``?token=``) or a service API key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from hub.errors import Forbidden, Unauthorized
from hub.tokens import Tokens


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user (``user_id``), possibly admin, or a service."""

    user_id: str | None
    admin: bool
    expires_at: float | None = None

    @property
    def service(self) -> bool:
        return self.user_id is None


def _bearer(conn: HTTPConnection, allow_query: bool) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <token>")
        return token.strip()
    if allow_query:
        return conn.query_params.get("token") or None
    return None


def authenticate(conn: HTTPConnection, *, allow_query_token: bool = False) -> Principal:
    """The caller of ``conn``; Unauthorized if there are no valid credentials."""
    key = conn.headers.get("x-api-key")
    if key:
        keys: list[str] = conn.app.state.settings.api_keys
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
            return Principal(user_id=None, admin=True)
        raise Unauthorized("invalid API key")
    token = _bearer(conn, allow_query_token)
    if token is None:
        raise Unauthorized("credentials are required")
    tokens: Tokens = conn.app.state.tokens
    claims = tokens.verify(token)
    return Principal(user_id=claims.user_id, admin=claims.admin, expires_at=claims.expires_at)


def require_user(conn: HTTPConnection, *, allow_query_token: bool = False) -> str:
    """The calling user's id; services (API keys) have no inbox of their own."""
    principal = authenticate(conn, allow_query_token=allow_query_token)
    if principal.user_id is None:
        raise Forbidden("this endpoint acts for a user; use a user token")
    return principal.user_id


def require_admin(conn: HTTPConnection) -> Principal:
    """An admin user or a service; Forbidden for other users."""
    principal = authenticate(conn)
    if not principal.admin:
        raise Forbidden("admin only")
    return principal
