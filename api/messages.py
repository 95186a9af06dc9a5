"""REST routes of direct messages between the caller and another user."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.auth import require_user
from api.jsonio import (
    UserRoute,
    json_response,
    path_int,
    path_user_id,
    query_bool,
    query_int,
    read_json,
)
from hub import messages
from hub.models import MessageSend, MessagesMarkRead


async def send(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, MessageSend)
    message, created = await messages.send(request.app.state.services, user, body)
    return json_response(message, status=201 if created else 200)


async def conversations(request: Request) -> Response:
    user = require_user(request)
    limit = query_int(request, "limit", 20, 1, 100) or 20
    return json_response(
        await messages.conversations(request.app.state.services, user, limit)
    )


async def conversation(request: Request) -> Response:
    user = require_user(request)
    other = path_user_id(request)
    page = await messages.conversation(
        request.app.state.services,
        user,
        other,
        limit=query_int(request, "limit", 50, 1, 100) or 50,
        before=query_int(request, "before", None, 1, 2**63 - 1),
    )
    return json_response(page)


async def mark_read(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, MessagesMarkRead)
    result = await messages.mark_read(
        request.app.state.services, user, ids=body.ids, other_id=body.user_id
    )
    return json_response(result)


async def delete_message(request: Request) -> Response:
    user = require_user(request)
    id_ = path_int(request, "id")
    for_everyone = query_bool(request, "for_everyone")
    await messages.delete(request.app.state.services, user, id_, for_everyone=for_everyone)
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/api/messages/send", send, methods=["POST"]),
    Route("/api/messages/conversations", conversations, methods=["GET"]),
    UserRoute("/api/messages/conversation/{user_id}", conversation, methods=["GET"]),
    Route("/api/messages/mark-read", mark_read, methods=["POST"]),
    Route("/api/messages/{id}", delete_message, methods=["DELETE"]),
]
