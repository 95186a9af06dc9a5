"""The one error hierarchy of notifyhub; only the edges map it to HTTP or WS codes, in one
table (api/errors.py) together with the dependency failures of db.errors and pubsub.errors.

    HubError
    ├── Unauthorized      no or bad credentials
    ├── Forbidden         authenticated, but not allowed
    ├── NotFound          missing, or not the caller's (never reveals which)
    ├── Conflict          the request clashes with stored state
    ├── PayloadTooLarge   a body or frame over its limit
    ├── UnsupportedMediaType  a body that is not JSON
    ├── InvalidInput      validation failed; ``errors`` lists the fields
    ├── RateLimited       too many requests
    └── Unavailable       a dependency (database, broker) is down
"""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Base of every error notifyhub raises on purpose; ``detail`` is safe to show users."""

    title = "Error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class Unauthorized(HubError):
    title = "Unauthorized"


class Forbidden(HubError):
    title = "Forbidden"


class NotFound(HubError):
    title = "Not Found"


class Conflict(HubError):
    title = "Conflict"


class PayloadTooLarge(HubError):
    title = "Payload Too Large"


class UnsupportedMediaType(HubError):
    title = "Unsupported Media Type"


class InvalidInput(HubError):
    """Validation failed; ``errors`` is a list of ``{"loc", "msg"}`` entries."""

    title = "Invalid Input"

    def __init__(self, detail: str = "", errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class RateLimited(HubError):
    """Over a limit; ``retry_after`` seconds is when trying again makes sense."""

    title = "Too Many Requests"

    def __init__(self, detail: str = "", retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(HubError):
    title = "Service Unavailable"
