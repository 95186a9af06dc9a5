"""REST routes of web push: the VAPID public key and the caller's push subscriptions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from api.auth import require_user
from api.jsonio import json_response, read_json
from api.pages import security_headers, static_dir
from hub import push_subscriptions as subs
from hub.errors import NotFound
from hub.vapid import Vapid, resolve

_UNSET = object()


def _vapid(request: Request) -> Vapid | None:
    """This app's VAPID identity (read once, on first use); None when push is off."""
    state = request.app.state
    vapid = getattr(state, "vapid", _UNSET)
    if vapid is _UNSET:
        vapid = state.vapid = resolve(state.settings)
    return vapid  # type: ignore[return-value]


async def vapid_public_key(request: Request) -> Response:
    require_user(request)
    vapid = _vapid(request)
    subs.require_configured(vapid)
    assert vapid is not None
    return json_response({"public_key": vapid.public_key})


async def subscribe(request: Request) -> Response:
    user = require_user(request)
    subs.require_configured(_vapid(request))
    body = await read_json(request, subs.PushSubscriptionIn)
    stored = await subs.subscribe(request.app.state.services, user, body,
                                  request.headers.get("user-agent"))
    return json_response(stored, status=201)


async def unsubscribe(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, subs.PushUnsubscribe)
    await subs.unsubscribe(request.app.state.services, user, body.endpoint)
    return Response(status_code=204)


async def service_worker(request: Request) -> Response:
    """``GET /sw.js``: the demo page's service worker, at the root so its scope is ``/``."""
    path = static_dir() / "sw.js"
    if not path.is_file():
        raise NotFound("the service worker is not installed")
    host = request.headers.get("host", "")
    headers = security_headers(host if all(c.isalnum() or c in ".-:[]" for c in host) else None)
    return FileResponse(path, media_type="text/javascript; charset=utf-8", headers=headers)


routes = [
    Route("/sw.js", service_worker, methods=["GET"]),
    Route("/api/push/vapid-public-key", vapid_public_key, methods=["GET"]),
    Route("/api/push/subscriptions", subscribe, methods=["POST"]),
    Route("/api/push/subscriptions", unsubscribe, methods=["DELETE"]),
]
