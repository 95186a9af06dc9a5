"""REST routes of notification templates (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_admin
from api.jsonio import json_response, read_json
from hub import templates
from hub.models import TemplatePut


async def list_templates(request: Request) -> Response:
    require_admin(request)
    items = await templates.list_all(request.app.state.services)
    return json_response({"items": items})


async def get_template(request: Request) -> Response:
    require_admin(request)
    item = await templates.get(request.app.state.services, request.path_params["key"])
    return json_response(item)


async def put_template(request: Request) -> Response:
    require_admin(request)
    body = await read_json(request, TemplatePut)
    stored = await templates.put(request.app.state.services, request.path_params["key"], body)
    return json_response(stored)


routes = [
    Route("/api/templates", list_templates, methods=["GET"]),
    Route("/api/templates/{key}", get_template, methods=["GET"]),
    Route("/api/templates/{key}", put_template, methods=["PUT"]),
]
