"""JSON in and out: bounded body reading, model validation, orjson responses."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from hub.models import USER_ID_RULE, valid_user_id, validate

M = TypeVar("M", bound=BaseModel)
_DIGITS = re.compile(r"^[0-9]+$")
#: Media types a JSON body may be sent as; a missing Content-Type is accepted too.
_JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` as JSON (UTC timestamps end in ``Z``)."""
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), status_code=status,
                    media_type="application/json")


#: The 415 detail: which header to send.
NOT_JSON = ("the body must be sent with the header Content-Type: application/json "
            "(or application/*+json)")
FORM = "application/x-www-form-urlencoded"


def _not_json(media: str) -> UnsupportedMediaType:
    hint = " (curl -d sends a form unless given -H 'Content-Type: application/json')"
    return UnsupportedMediaType(NOT_JSON + (hint if media == FORM else ""))


async def read_body(request: Request, *, optional: bool = False) -> bytes:
    """The request body, refusing more than the configured limit without buffering it.

    A body labelled with a media type other than JSON is refused (415) before it is
    read; with ``optional``, an empty one is accepted whatever its label, since there
    is nothing to misread (``curl -X POST -d ''`` labels it as a form).
    """
    limit: int = request.app.state.settings.max_body_bytes
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wrong_type = bool(media) and not _JSON_TYPES.match(media)
    declared = request.headers.get("content-length")
    if wrong_type and not (optional and declared in (None, "0")):
        raise _not_json(media)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        if wrong_type and chunk:
            raise _not_json(media)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The body parsed as JSON and validated as ``model``; InvalidInput otherwise.

    With ``optional``, an empty body stands for ``{}``.
    """
    raw = await read_body(request, optional=optional)
    if optional and not raw.strip():
        raw = b"{}"
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON") from None
    return parse(model, value)


def parse(model: type[M], value: Any) -> M:
    """Validate ``value`` as ``model``; InvalidInput listing the fields otherwise."""
    return validate(model, value)


def query_int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """Integer query parameter ``name`` within [lo, hi]; InvalidInput otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.match(raw) or len(raw) > 19:
        raise InvalidInput(f"{name} must be an integer",
                           [{"loc": ["query", name], "msg": "not an integer"}])
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}",
                           [{"loc": ["query", name], "msg": f"must be {lo}..{hi}"}])
    return value


def query_bool(request: Request, name: str) -> bool:
    """Boolean query parameter (``true/1/yes`` or ``false/0/no/empty``)."""
    return bool(query_optional_bool(request, name))


def query_optional_bool(request: Request, name: str) -> bool | None:
    """Boolean query parameter (``true/1/yes``, ``false/0/no``), None when absent or empty."""
    raw = (request.query_params.get(name) or "").lower()
    if raw == "":
        return None
    if raw in ("0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false",
                       [{"loc": ["query", name], "msg": "not a boolean"}])


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str:
    """Query parameter ``name``, one of ``choices`` (the first when absent or empty)."""
    raw = request.query_params.get(name) or choices[0]
    if raw not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}",
                           [{"loc": ["query", name], "msg": f"one of {', '.join(choices)}"}])
    return raw


def query_texts(request: Request, name: str, *, most: int, chars: int) -> list[str] | None:
    """Repeated query parameter ``name`` (``?type=a&type=b``): its distinct non-empty
    values in order, at most ``most`` of ``chars`` characters without NUL; None if none."""
    values = list(dict.fromkeys(v for v in request.query_params.getlist(name) if v))
    if len(values) > most:
        raise InvalidInput(f"{name} may be given at most {most} times",
                           [{"loc": ["query", name], "msg": f"at most {most} values"}])
    for value in values:
        if len(value) > chars or "\x00" in value:
            raise InvalidInput(f"{name} must be at most {chars} characters, without NUL",
                               [{"loc": ["query", name], "msg": "too long or contains NUL"}])
    return values or None


def query_time(request: Request, name: str) -> datetime | None:
    """Timestamp query parameter (RFC 3339 with a time zone, years 2000-9999), or None."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or not 2000 <= value.year <= 9999:
        # A "+" that was not percent-encoded arrives as a space.
        raise InvalidInput(
            f"{name} must be an RFC 3339 timestamp with a time zone (Z, or an offset with "
            "its + sent as %2B), between the years 2000 and 9999",
            [{"loc": ["query", name], "msg": "not a timestamp with a time zone"}])
    return value


class UserRoute(Route):
    """A route whose ``{user_id}`` segment is one whole user id, ``/`` included.

    A user id with ``/`` or ``%`` travels percent-encoded (``team%2Fann``), and the server
    decodes the path before routing, so the segment may hold ``/`` by then: it matches as
    ``{user_id:path}``. ``path`` stays the documented template (``/openapi.json``, the
    ``route`` label of the metrics).
    """

    def __init__(self, path: str, endpoint: Any, **options: Any) -> None:
        super().__init__(path.replace("{user_id}", "{user_id:path}"), endpoint, **options)
        self.path = path


def path_user_id(request: Request) -> str:
    """The ``{user_id}`` path parameter; InvalidInput (422) if it is not a user id."""
    user_id: str = request.path_params["user_id"]
    if not valid_user_id(user_id):
        raise InvalidInput(f"user_id is not valid: {USER_ID_RULE}",
                           [{"loc": ["path", "user_id"], "msg": USER_ID_RULE}])
    return user_id


def path_int(request: Request, name: str) -> int:
    """Integer path parameter; a non-number is simply not found."""
    from hub.errors import NotFound

    raw = request.path_params[name]
    if not _DIGITS.match(raw) or len(raw) > 19:
        raise NotFound("no such object")
    value = int(raw)
    if not 0 < value < 2**63:
        raise NotFound("no such object")
    return value
