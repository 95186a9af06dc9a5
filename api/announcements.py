"""REST routes of announcements: everyone reads the active ones, admins manage them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate, require_admin
from api.jsonio import json_response, path_int, query_bool, read_json
from hub import announcements
from hub.errors import Forbidden
from hub.models import AnnouncementCreate


async def list_announcements(request: Request) -> Response:
    principal = authenticate(request)
    svc = request.app.state.services
    if query_bool(request, "include_scheduled"):
        if not principal.admin:
            raise Forbidden("include_scheduled is for admins")
        return json_response({"items": await announcements.current_and_scheduled(svc)})
    return json_response({"items": await announcements.active(svc)})


async def create_announcement(request: Request) -> Response:
    require_admin(request)
    body = await read_json(request, AnnouncementCreate)
    item = await announcements.create(request.app.state.services, body)
    return json_response(item, status=201)


async def delete_announcement(request: Request) -> Response:
    require_admin(request)
    await announcements.delete(request.app.state.services, path_int(request, "id"))
    return Response(status_code=204)


routes = [
    Route("/api/announcements", list_announcements, methods=["GET"]),
    Route("/api/announcements", create_announcement, methods=["POST"]),
    Route("/api/announcements/{id}", delete_announcement, methods=["DELETE"]),
]
