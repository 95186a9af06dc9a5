"""Per-caller rate limits for the REST API: a pure ASGI middleware answering 429.

Who is charged for a request (no JWT is verified here; the route still does that):

- every request, except those made with a valid API key, is charged to its client
  address (``scope["client"]``, which uvicorn sets from ``X-Forwarded-For`` when the
  proxy is trusted), so a client rotating garbage tokens is still limited;
- a request carrying a user token (``Authorization`` header, or ``?token=`` as SSE uses)
  is charged to that credential too, keyed by a hash of it: many users behind one
  address each get their own budget, and a forged token cannot drain someone else's;
- a request with a valid ``X-API-Key`` (a trusted backend service) is charged only to
  that key, under a separate and much higher limit (none when ``api_key_limiter`` is
  None); an invalid key is charged as an anonymous request and answered 401 by the app;
- writes (POST, PUT, PATCH, DELETE) by users and anonymous callers are also charged to
  ``write_limiter`` when one is given: keyed by the *verified* user id (``user_key``)
  when ``tokens`` is given and the token verifies, so every token and every WebSocket
  of a user share one write budget (``ws.py`` charges ``message.send`` and
  ``notifications.mark_read`` frames to the same limiter and key); else by the
  credential hash, or the address when anonymous.

``/health``, ``/ready``, ``/metrics`` and ``/static/…`` are never limited. WebSocket
scopes pass through: ``ws.py`` charges its handshake to the same address limiter
(``address_key``) and its write frames as above.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem
from hub.errors import Unauthorized
from hub.ratelimit import RateLimiter
from hub.tokens import Tokens

EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
EXEMPT_PREFIXES = ("/static/",)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def user_key(user_id: str) -> str:
    """The write-budget key of a verified user: the same for REST and WebSocket writes."""
    return "user:" + user_id


def address_key(scope: Scope) -> str:
    """The address-budget key of an HTTP or WebSocket scope (its client IP)."""
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def _digest(value: bytes) -> str:
    # Hashing keeps every key small (a header may be kilobytes) and keeps no secrets
    # in memory; a collision only makes two callers share a budget.
    return hashlib.blake2b(value, digest_size=16).hexdigest()


class RateLimitMiddleware:
    """Answers 429 problem+json with ``Retry-After`` when a caller is over its limit.

    ``limiter`` limits each user credential, and each client address too unless
    ``ip_limiter`` gives addresses a limit of their own; ``api_keys`` are the valid
    service keys, limited by ``api_key_limiter`` (exempt when it is None). ``tokens``
    lets writes be keyed by verified user id (see the module docstring).
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        write_limiter: RateLimiter | None = None,
        *,
        ip_limiter: RateLimiter | None = None,
        api_key_limiter: RateLimiter | None = None,
        api_keys: Iterable[str] = (),
        tokens: Tokens | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.write_limiter = write_limiter
        self.ip_limiter = ip_limiter if ip_limiter is not None else limiter
        self.api_key_limiter = api_key_limiter
        self.api_keys = [key.encode() for key in api_keys]
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope):
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        detail, retry = refusal
        seconds = max(1, math.ceil(retry))
        response = problem(
            429, f"{detail}; retry in {seconds} s", headers={"Retry-After": str(seconds)}
        )
        await response(scope, receive, send)

    def _check(self, scope: Scope) -> tuple[str, float] | None:
        """None to go ahead, else ``(detail, retry_after_seconds)`` of the first refusal."""
        api_key, authorization = _credentials(scope)
        if api_key is not None and self._valid_key(api_key):
            if self.api_key_limiter is None:
                return None
            allowed, retry = self.api_key_limiter.allow("key:" + _digest(api_key))
            return None if allowed else ("too many requests for this API key", retry)
        ip = address_key(scope)
        # The address first: a flood of garbage tokens then never reaches (and never
        # fills) the per-credential map.
        allowed, retry = self.ip_limiter.allow(ip)
        if not allowed:
            return "too many requests from this address", retry
        key = ip
        if api_key is None and authorization is not None:
            key = "cred:" + _digest(authorization)
            allowed, retry = self.limiter.allow(key)
            if not allowed:
                return "too many requests", retry
        if self.write_limiter is not None and scope["method"] in WRITE_METHODS:
            if api_key is None and authorization is not None:
                key = self._writer(authorization) or key
            allowed, retry = self.write_limiter.allow(key)
            if not allowed:
                return "too many changes", retry
        return None

    def _writer(self, authorization: bytes) -> str | None:
        """``user_key`` of a credential that verifies, else None.

        Only writes pay for this verification, and only once the address and credential
        buckets let them through, so a flood of forged tokens costs at most the address
        budget in signature checks. A forged token never verifies, so it cannot spend a
        real user's write budget; it stays on its own credential key (the app answers 401).
        """
        if self.tokens is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return user_key(self.tokens.verify(token.strip()).user_id)
        except Unauthorized:
            return None

    def _valid_key(self, key: bytes) -> bool:
        return any(hmac.compare_digest(key, k) for k in self.api_keys)


def _exempt(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _credentials(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """The raw ``X-API-Key`` and user credential (header or ``?token=``), either None."""
    api_key = authorization = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization":
            authorization = value
    if authorization is None and b"token=" in scope.get("query_string", b""):
        token = QueryParams(scope["query_string"]).get("token")
        if token:
            authorization = b"Bearer " + token.encode()
    return api_key, authorization
