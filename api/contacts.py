"""REST routes of the user directory and of a notification's deliveries (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_admin
from api.jsonio import UserRoute, json_response, path_int, path_user_id, read_json
from hub import contacts
from hub.models import Contact


async def get_contact(request: Request) -> Response:
    require_admin(request)
    user = path_user_id(request)
    return json_response(await contacts.get(request.app.state.services, user))


async def put_contact(request: Request) -> Response:
    require_admin(request)
    user = path_user_id(request)
    body = await read_json(request, Contact)
    return json_response(await contacts.put(request.app.state.services, user, body))


async def delete_contact(request: Request) -> Response:
    require_admin(request)
    user = path_user_id(request)
    await contacts.delete(request.app.state.services, user)
    return Response(status_code=204)


async def list_deliveries(request: Request) -> Response:
    require_admin(request)
    items = await contacts.deliveries_of(request.app.state.services, path_int(request, "id"))
    return json_response({"items": items})


routes = [
    UserRoute("/api/users/{user_id}/contact", get_contact, methods=["GET"]),
    UserRoute("/api/users/{user_id}/contact", put_contact, methods=["PUT"]),
    UserRoute("/api/users/{user_id}/contact", delete_contact, methods=["DELETE"]),
    Route("/api/notifications/{id}/deliveries", list_deliveries, methods=["GET"]),
]
