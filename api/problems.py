"""Translates errors into RFC 9457 problem+json responses; never a traceback."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.pool import UNAVAILABLE
from hub import errors
from hub.models import validation_errors

log = logging.getLogger("notifyhub")

STATUS: dict[type[errors.HubError], int] = {
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidInput: 422,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Invalid Input", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}



def problem(status: int, detail: str, errors_: list[dict[str, Any]] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors_ is not None:
        body["errors"] = errors_
    return Response(orjson.dumps(body), status_code=status, headers=dict(headers or {}),
                    media_type="application/problem+json")


def status_of(exc: errors.HubError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.HubError)
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    errs = exc.errors if isinstance(exc, errors.InvalidInput) else None
    return problem(status, exc.detail, errs, headers)


async def pydantic_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return problem(422, "the request is not valid", validation_errors(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail or TITLES.get(exc.status_code, "Error"),
                   headers=exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UNAVAILABLE):
        log.warning("database unavailable: %s", exc or type(exc).__name__)  # a timeout: ""
        return problem(503, "the database is unavailable")
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "an unexpected error occurred")


# Starlette re-raises whatever reaches its outermost ``Exception`` handler (and the
# server then drops the connection), so unexpected errors are answered by CatchAll,
# an inner middleware, and only specific classes are registered here.
HANDLERS: dict[Any, Any] = {
    errors.HubError: hub_error,
    ValidationError: pydantic_error,
    HTTPException: http_error,
    **{cls: unexpected for cls in UNAVAILABLE},
}


class CatchAll:
    """Answers any error that escaped the handlers with a problem+json 500 (or 503).

    Once a response has started (a stream), nothing can be sent: the error is logged
    and the connection ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                log.exception("error after the response started on %s", scope.get("path"))
                return
            response = await unexpected(Request(scope), exc)
            await response(scope, receive, send)
