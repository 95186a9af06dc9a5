"""``GET /api/presence``: who is online (docs/api.md, "Presence")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.auth import authenticate
from api.jsonio import json_response
from hub import presence
from hub.errors import InvalidInput
from hub.models import USER_ID_RULE, valid_user_id

#: The most user ids one request may ask about (repeats count once).
MAX_IDS = 100


def user_ids(request: Request) -> list[str]:
    """The ids of ``?user_ids=a,b`` (comma-separated) and ``?user_id=c`` (one whole id,
    which may hold a comma), both repeatable: in order, each once; InvalidInput unless
    there are 1 to ``MAX_IDS`` valid ids."""
    params = request.query_params
    given = [("user_ids", part) for value in params.getlist("user_ids")
             for part in value.split(",") if part != ""]
    given += [("user_id", value) for value in params.getlist("user_id")]
    for name, value in given:
        if not valid_user_id(value):
            raise InvalidInput(f"a user id is not valid: {USER_ID_RULE}",
                               [{"loc": ["query", name], "msg": USER_ID_RULE}])
    ids = list(dict.fromkeys(value for _, value in given))
    if not 1 <= len(ids) <= MAX_IDS:
        raise InvalidInput(
            f"give 1 to {MAX_IDS} user ids (user_ids=a,b or user_id=a)",
            [{"loc": ["query", "user_ids"], "msg": f"{len(ids)} given; 1 to {MAX_IDS} allowed"}],
        )
    return ids


async def get_presence(request: Request) -> Response:
    principal = authenticate(request)
    ids = user_ids(request)
    viewer = None if principal.admin else principal.user_id
    items = await presence.lookup(request.app.state.services, ids, viewer)
    return json_response({"items": items})


routes: list[BaseRoute] = [Route("/api/presence", get_presence, methods=["GET"])]
