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

from api.errors import ANSWERS, DOWN, INTERNAL, PROBLEM_TYPE, UNAVAILABLE, answer_for
from db.errors import DatabaseRejected
from hub import errors
from hub.models import validation_errors
from pubsub.errors import BrokerUnavailable

log = logging.getLogger("notifyhub")

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Invalid Input", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}

#: The problem code of a status no error of the table answers (Starlette's own 404/405).
_CODES = {
    **{answer.status: answer.code for answer in reversed(ANSWERS.values())},
    400: "bad_request", 405: "method_not_allowed", 500: INTERNAL.code,
}


def problem(status: int, detail: str, errors_: list[dict[str, Any]] | None = None,
            headers: Mapping[str, str] | None = None, code: str | None = None) -> Response:
    """A problem+json response; its ``type`` is ``api.errors.PROBLEM_TYPE`` + ``code``
    (by default the code of ``status``)."""
    code = code or _CODES.get(status)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code if code else "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors_ is not None:
        body["errors"] = errors_
    return Response(orjson.dumps(body), status_code=status, headers=dict(headers or {}),
                    media_type="application/problem+json")


async def hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.HubError)
    answer = answer_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if answer.status == 401 else None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    errs = exc.errors if isinstance(exc, errors.InvalidInput) else None
    return problem(answer.status, exc.detail, errs, headers, answer.code)


async def pydantic_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return problem(422, "the request is not valid", validation_errors(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail or TITLES.get(exc.status_code, "Error"),
                   headers=exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A dependency failure (``api.errors.DOWN``) or a rejected value; else a bug (500)."""
    answer = answer_for(exc)
    if answer is UNAVAILABLE:
        log.warning("%s unavailable: %s", _dependency(exc), exc)
        return problem(503, f"the {_dependency(exc)} is unavailable", code=answer.code)
    if isinstance(exc, DatabaseRejected):
        log.warning("the database refused a value on %s %s: %s", request.method,
                    request.url.path, exc)
        return problem(answer.status, "the database refused a value of the request",
                       code=answer.code)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "an unexpected error occurred", code=INTERNAL.code)


def _dependency(exc: Exception) -> str:
    return "broker" if isinstance(exc, BrokerUnavailable) else "database"


# Starlette re-raises whatever reaches its outermost ``Exception`` handler (and the
# server then drops the connection), so unexpected errors are answered by CatchAll,
# an inner middleware, and only specific classes are registered here.
HANDLERS: dict[Any, Any] = {
    errors.HubError: hub_error,
    ValidationError: pydantic_error,
    HTTPException: http_error,
    **{cls: unexpected for cls in (*DOWN, DatabaseRejected)},
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
