"""REST routes of the caller's inbox, preferences, and creating notifications."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate, require_admin, require_user
from api.jsonio import (
    UserRoute,
    json_response,
    path_int,
    path_user_id,
    query_bool,
    query_choice,
    query_int,
    query_optional_bool,
    query_texts,
    query_time,
    read_json,
)
from db.notifications import BOXES, Filters
from hub import actions, inbox, notifications, preferences, scheduled
from hub.errors import InvalidInput
from hub.models import (
    PRIORITIES,
    USER_ID_RULE,
    MarkAllRead,
    MarkRead,
    NotificationCreate,
    Preferences,
    PreferencesPatch,
    Selection,
    Snooze,
    valid_user_id,
)

#: The most values of a repeated filter (``type``).
MAX_FILTER_VALUES = 20


async def list_notifications(request: Request) -> Response:
    user = require_user(request)
    params = request.query_params
    query = params.get("q") or None
    if query is not None and (len(query) > 200 or "\x00" in query):
        raise InvalidInput("q must be at most 200 characters, without NUL",
                           [{"loc": ["query", "q"], "msg": "too long or contains NUL"}])
    read = query_optional_bool(request, "read")
    if query_bool(request, "unread_only"):
        if read:
            raise InvalidInput("unread_only=true and read=true contradict each other",
                               [{"loc": ["query", "read"], "msg": "contradicts unread_only"}])
        read = False
    priorities = query_texts(request, "priority", most=len(PRIORITIES), chars=10)
    if priorities is not None and not set(priorities) <= set(PRIORITIES):
        raise InvalidInput("priority must be low, normal or high",
                           [{"loc": ["query", "priority"], "msg": "one of low, normal, high"}])
    filters = Filters(
        read=read,
        types=query_texts(request, "type", most=MAX_FILTER_VALUES, chars=200),
        priorities=priorities,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        query=query,
    )
    page = await notifications.page(
        request.app.state.services,
        user,
        box=query_choice(request, "box", BOXES),
        limit=query_int(request, "limit", 20, 1, 100) or 20,
        before=query_int(request, "before", None, 1, 2**63 - 1),
        filters=filters,
    )
    return json_response(page)


async def create_notifications(request: Request) -> Response:
    require_admin(request)
    body = await read_json(request, NotificationCreate)
    created = await notifications.create(request.app.state.services, body)
    if created.scheduled is not None:  # sent at its send_at (docs/delivery.md)
        return json_response(created.scheduled, status=200 if created.replayed else 202)
    return json_response(
        {"items": created.items, "suppressed": created.suppressed,
         "grouped": created.grouped},
        status=200 if created.replayed else 201,
    )


async def get_notification(request: Request) -> Response:
    """A user's own notification; an admin's or service's: anyone's, or a scheduled one."""
    principal = authenticate(request)
    user = None if principal.admin else principal.user_id
    found = await notifications.get(request.app.state.services, user, path_int(request, "id"))
    return json_response(found)


async def list_scheduled(request: Request) -> Response:
    require_admin(request)
    user = request.query_params.get("user_id")
    if user is not None and not valid_user_id(user):
        raise InvalidInput(f"user_id is not valid: {USER_ID_RULE}",
                           [{"loc": ["query", "user_id"], "msg": USER_ID_RULE}])
    page = await scheduled.page(
        request.app.state.services, user,
        before=query_int(request, "before", None, 1, 2**63 - 1),
        limit=query_int(request, "limit", 20, 1, 100) or 20,
    )
    return json_response(page)


async def mark_read(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, MarkRead)
    return json_response(await notifications.mark_read(request.app.state.services, user, body.ids))


async def mark_all_read(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, MarkAllRead, optional=True)
    result = await notifications.mark_all_read(request.app.state.services, user, body.before_id)
    return json_response(result)


async def choose_action(request: Request) -> Response:
    """The caller chooses one of their notification's actions, once (docs/api.md,
    "Action buttons"); no body is read."""
    user = require_user(request)
    chosen = await actions.choose(
        request.app.state.services, user, path_int(request, "id"),
        request.path_params["action_id"],
    )
    return json_response(chosen)


async def unread_count(request: Request) -> Response:
    user = require_user(request)
    return json_response(await notifications.counts(request.app.state.services, user))


async def mark_seen(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, Selection)
    return json_response(await inbox.mark_seen(request.app.state.services, user, body))


async def archive(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, Selection)
    return json_response(await inbox.archive(request.app.state.services, user, body))


async def unarchive(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, Selection)
    return json_response(await inbox.unarchive(request.app.state.services, user, body))


async def snooze(request: Request) -> Response:
    user = require_user(request)
    id_ = path_int(request, "id")
    body = await read_json(request, Snooze)
    return json_response(await inbox.snooze(request.app.state.services, user, id_, body.until))


async def delete_notification(request: Request) -> Response:
    """A user deletes their own notification; an admin or service cancels a scheduled one
    or deletes anyone's."""
    principal = authenticate(request)
    user = None if principal.admin else principal.user_id
    await notifications.delete(request.app.state.services, user, path_int(request, "id"))
    return Response(status_code=204)


async def get_preferences(request: Request) -> Response:
    user = require_user(request)
    prefs = await preferences.get(request.app.state.services, user)
    return json_response(prefs.model_dump(mode="json"))


async def user_preferences(request: Request) -> Response:
    """Another user's preferences, for the services that deliver email and push."""
    require_admin(request)
    user = path_user_id(request)
    prefs = await preferences.get(request.app.state.services, user)
    return json_response(prefs.model_dump(mode="json"))


async def patch_preferences(request: Request) -> Response:
    user = require_user(request)
    change = await read_json(request, PreferencesPatch)
    stored = await preferences.patch(request.app.state.services, user, change)
    return json_response(stored.model_dump(mode="json"))


async def put_preferences(request: Request) -> Response:
    user = require_user(request)
    body = await read_json(request, Preferences)
    stored = await preferences.put(request.app.state.services, user, body)
    return json_response(stored.model_dump(mode="json"))


routes = [
    Route("/api/notifications", list_notifications, methods=["GET"]),
    Route("/api/notifications", create_notifications, methods=["POST"]),
    Route("/api/notifications/mark-read", mark_read, methods=["POST"]),
    Route("/api/notifications/mark-all-read", mark_all_read, methods=["POST"]),
    Route("/api/notifications/unread-count", unread_count, methods=["GET"]),
    Route("/api/notifications/seen", mark_seen, methods=["POST"]),
    Route("/api/notifications/archive", archive, methods=["POST"]),
    Route("/api/notifications/unarchive", unarchive, methods=["POST"]),
    Route("/api/notifications/preferences", get_preferences, methods=["GET"]),
    Route("/api/notifications/preferences", put_preferences, methods=["PUT"]),
    Route("/api/notifications/preferences", patch_preferences, methods=["PATCH"]),
    Route("/api/notifications/scheduled", list_scheduled, methods=["GET"]),
    Route("/api/notifications/{id}", get_notification, methods=["GET"]),
    Route("/api/notifications/{id}", delete_notification, methods=["DELETE"]),
    Route("/api/notifications/{id}/actions/{action_id}", choose_action, methods=["POST"]),
    Route("/api/notifications/{id}/snooze", snooze, methods=["POST"]),
    UserRoute("/api/users/{user_id}/preferences", user_preferences, methods=["GET"]),
]
