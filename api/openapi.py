"""The OpenAPI 3.1 document of the REST API, built from one route table and the models.

``ROUTES`` lists every REST operation (the table in docs/api.md) with its security, models and
status codes; the schemas come from ``hub.models`` via pydantic, so the document
cannot drift from what the handlers validate. A test checks every ``/api`` route of
the app is listed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from hub import models as m
from hub import push_subscriptions as push

REF = "#/components/schemas/{model}"
#: Who may call: nobody needs credentials, a user JWT, or an admin JWT / API key.
NONE: tuple[str, ...] = ()
USER = ("bearerAuth",)
ADMIN = ("bearerAuth", "apiKey")
#: The live stream also takes the user JWT as ``?token=`` (EventSource sets no headers).
STREAM = ("bearerAuth", "queryToken")


@dataclass(frozen=True, slots=True)
class Param:
    """A query, path or header parameter."""

    name: str
    where: Literal["query", "path", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Op:
    """One REST operation: ``status`` (and ``also``) answer with ``response``."""

    method: str
    path: str
    summary: str
    tag: str
    security: tuple[str, ...]
    request: type[BaseModel] | None = None
    response: type[BaseModel] | str | None = None  # a str names an entry of EXTRA_SCHEMAS
    status: int = 200
    also: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    media_type: str = "application/json"
    body_optional: bool = False
    demo_only: bool = False  # listed only when the hub runs in demo mode
    #: Statuses answered with other models than ``response``: ``(status, models)``, one
    #: of the models (``anyOf``) when there are several.
    other: tuple[tuple[int, tuple[type[BaseModel], ...]], ...] = ()


def _q(name: str, schema: dict[str, Any], description: str) -> Param:
    return Param(name, "query", schema, description)


ID = Param("id", "path", {"type": "integer", "minimum": 1}, "the object's id", True)
USER_ID = {"type": "string", "pattern": m.USER_ID_RE.pattern}
LIMIT_20 = _q("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
              "page size")
BEFORE = _q("before", {"type": "integer", "minimum": 1},
            "cursor: only items with a smaller id (the previous page's next_before)")
BOOL = {"type": "boolean", "default": False}
UNSUBSCRIBE_TOKEN = Param("token", "query", {"type": "string", "maxLength": 2048},
                          "the signed token of the email's List-Unsubscribe link", True)

ROUTES: tuple[Op, ...] = (
    # ---- notifications (the caller's own) ----
    Op("GET", "/api/notifications",
       "List the caller's inbox (or archive, or everything), newest first",
       "notifications", USER, response=m.NotificationPage, errors=(403, 422),
       params=(_q("box", {"type": "string", "enum": ["inbox", "archived", "all"],
                          "default": "inbox"},
                  "inbox (not archived or snoozed), archived, or all (snoozed ones too)"),
               LIMIT_20,
               _q("before", {"type": "integer", "minimum": 1},
                  "cursor: only items with a smaller position (the previous page's "
                  "next_before)"),
               _q("unread_only", BOOL, "only unread ones"),
               _q("read", {"type": "boolean"}, "only read (true) or unread (false) ones"),
               _q("type", {"type": "array", "maxItems": 20,
                           "items": {"type": "string", "maxLength": 200}},
                  "only these types: repeat the parameter (type=a&type=b)"),
               _q("priority", {"type": "array", "maxItems": 3,
                               "items": {"type": "string", "enum": list(m.PRIORITIES)}},
                  "only these priorities: repeat the parameter"),
               _q("since", {"type": "string", "format": "date-time"},
                  "only those created at or after this time (RFC 3339, with a time zone)"),
               _q("until", {"type": "string", "format": "date-time"},
                  "only those created before this time (RFC 3339, with a time zone)"),
               _q("q", {"type": "string", "maxLength": 200},
                  "search title and body, case-insensitive plain text"))),
    Op("POST", "/api/notifications",
       "Create notifications for users, now or at send_at (admin or API key)",
       "notifications", ADMIN, request=m.NotificationCreate, response=m.CreateResult,
       status=201, also=(200, 202), errors=(403, 422),
       other=((200, (m.CreateResult, m.ScheduledNotification)),
              (202, (m.ScheduledNotification,)))),
    Op("GET", "/api/notifications/scheduled",
       "Notifications waiting for their send_at, newest first (admin or API key)",
       "notifications", ADMIN, response=m.ScheduledPage, errors=(403, 422),
       params=(Param("user_id", "query", USER_ID, "only those for this user"),
               LIMIT_20, BEFORE)),
    Op("GET", "/api/notifications/{id}",
       "One notification: the caller's own; an admin's or API key's: anyone's, or a "
       "scheduled one", "notifications", USER + ("apiKey",), response=m.Notification,
       errors=(404,), params=(ID,),
       other=((200, (m.Notification, m.ScheduledNotification)),)),
    Op("POST", "/api/notifications/mark-read", "Mark some of the caller's notifications read",
       "notifications", USER, request=m.MarkRead, response=m.UpdatedCount, errors=(403, 422)),
    Op("POST", "/api/notifications/mark-all-read", "Mark all (or all up to before_id) read",
       "notifications", USER, request=m.MarkAllRead, response=m.UpdatedCount,
       errors=(403, 422), body_optional=True),
    Op("GET", "/api/notifications/unread-count",
       "The caller's unread count, and how many of those are unseen",
       "notifications", USER, response=m.UnreadCount, errors=(403,)),
    Op("POST", "/api/notifications/seen", "Mark notifications seen (by ids, or up to before_id)",
       "notifications", USER, request=m.Selection, response=m.UpdatedCount, errors=(403, 422)),
    Op("POST", "/api/notifications/archive",
       "Archive notifications (by ids, or the inbox up to before_id)",
       "notifications", USER, request=m.Selection, response=m.UpdatedCount, errors=(403, 422)),
    Op("POST", "/api/notifications/unarchive",
       "Move archived notifications back to the inbox (by ids, or up to before_id)",
       "notifications", USER, request=m.Selection, response=m.UpdatedCount, errors=(403, 422)),
    Op("POST", "/api/notifications/{id}/snooze",
       "Snooze one of the caller's notifications until a time",
       "notifications", USER, request=m.Snooze, response=m.Snoozed, errors=(403, 422),
       params=(ID,)),
    Op("GET", "/api/notifications/preferences", "The caller's preferences",
       "notifications", USER, response=m.Preferences, errors=(403,)),
    Op("PUT", "/api/notifications/preferences", "Replace the caller's preferences",
       "notifications", USER, request=m.Preferences, response=m.Preferences,
       errors=(403, 422)),
    Op("PATCH", "/api/notifications/preferences",
       "Change some of the caller's preferences (the rest stays)",
       "notifications", USER, request=m.PreferencesPatch, response=m.Preferences,
       errors=(403, 422)),
    Op("GET", "/api/users/{user_id}/preferences",
       "A user's preferences, for delivery workers (admin or API key)",
       "notifications", ADMIN, response=m.Preferences, errors=(403, 422),
       params=(Param("user_id", "path", USER_ID, "whose preferences", True),)),
    Op("DELETE", "/api/notifications/{id}",
       "Delete one of the caller's notifications; an admin or API key: cancel a scheduled "
       "one, or delete anyone's", "notifications", USER + ("apiKey",), status=204,
       errors=(404,), params=(ID,)),
    Op("POST", "/api/notifications/{id}/actions/{action_id}",
       "Choose one of the caller's notification's actions, once; marks it read (no body)",
       "notifications", USER, response=m.ActedNotification, errors=(403, 404, 409),
       params=(ID, Param("action_id", "path", {"type": "string",
                                               "pattern": m.ACTION_ID_RE.pattern},
                         "the id of one of the notification's actions", True))),
    # ---- direct messages ----
    Op("POST", "/api/messages/send", "Send a direct message (200 on a repeated client_id)",
       "messages", USER, request=m.MessageSend, response=m.Message, status=201, also=(200,),
       errors=(403, 409, 422)),
    Op("GET", "/api/messages/conversations", "The caller's conversations, newest first",
       "messages", USER, response=m.ConversationList, errors=(403, 422), params=(LIMIT_20,)),
    Op("GET", "/api/messages/conversation/{user_id}", "Messages with one user, newest first",
       "messages", USER, response=m.MessagePage, errors=(403, 422),
       params=(Param("user_id", "path", USER_ID, "the other user", True),
               _q("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                  "page size"), BEFORE)),
    Op("POST", "/api/messages/mark-read", "Mark received messages read (by ids or sender)",
       "messages", USER, request=m.MessagesMarkRead, response=m.Updated, errors=(403, 422)),
    Op("DELETE", "/api/messages/{id}", "Hide a message for the caller, or remove it for both",
       "messages", USER, status=204, errors=(403, 404, 422),
       params=(ID, _q("for_everyone", BOOL, "remove it for both (sender only)"))),
    # ---- presence ----
    Op("GET", "/api/presence",
       "Who is online: the caller's conversation partners, anyone for an admin or API key",
       "live", ADMIN, response=m.PresenceList, errors=(403, 422, 503),
       params=(_q("user_ids", {"type": "string"},
                  "comma-separated user ids (1-100 in all, with user_id; repeats count once)"),
               _q("user_id", USER_ID,
                  "one whole user id (for an id holding a comma); may be repeated"))),
    # ---- live ----
    Op("GET", "/api/stream", "Server-sent events of the caller's live events",
       "live", STREAM, response="EventStream", media_type="text/event-stream",
       errors=(403, 422, 429),
       params=(_q("token", {"type": "string"},
                  "the user JWT, for clients that cannot set headers (EventSource); "
                  "the Authorization header wins when both are sent"),
               _q("since", {"type": "integer", "minimum": 0}, "resume after this seq"),
               Param("Last-Event-ID", "header", {"type": "string"},
                     "resume after this seq (sent by EventSource on reconnect); "
                     "wins over since"))),
    # ---- announcements ----
    Op("GET", "/api/announcements", "Active announcements, most recently started first",
       "announcements", ADMIN, response=m.AnnouncementList, errors=(403, 422),
       params=(_q("include_scheduled", BOOL,
                  "admins: also those not started yet (everything not ended)"),)),
    Op("POST", "/api/announcements", "Create an announcement, now or scheduled (admin)",
       "announcements", ADMIN, request=m.AnnouncementCreate, response=m.Announcement,
       status=201, errors=(403, 422)),
    Op("DELETE", "/api/announcements/{id}", "Delete an announcement (admin)",
       "announcements", ADMIN, status=204, errors=(403, 404), params=(ID,)),
    # ---- templates ----
    Op("GET", "/api/templates", "Every notification template (admin)",
       "templates", ADMIN, response=m.TemplateList, errors=(403,)),
    Op("GET", "/api/templates/{key}", "One notification template (admin)",
       "templates", ADMIN, response=m.Template, errors=(403, 404),
       params=(Param("key", "path", {"type": "string", "pattern": "^[a-z0-9_.-]{1,100}$"},
                     "the template key", True),)),
    Op("PUT", "/api/templates/{key}", "Create or replace a template (admin)",
       "templates", ADMIN, request=m.TemplatePut, response=m.Template, errors=(403, 422),
       params=(Param("key", "path", {"type": "string", "pattern": "^[a-z0-9_.-]{1,100}$"},
                     "the template key", True),)),
    # ---- web push (docs/delivery.md, "Web push") ----
    Op("GET", "/api/push/vapid-public-key",
       "The hub's VAPID public key, for pushManager.subscribe (404: web push is off)",
       "push", USER, response=push.VapidPublicKey, errors=(403, 404)),
    Op("POST", "/api/push/subscriptions",
       "Store the browser's PushSubscription for the caller (idempotent on its endpoint)",
       "push", USER, request=push.PushSubscriptionIn, response=push.PushSubscriptionOut,
       status=201, errors=(403, 404, 422)),
    Op("DELETE", "/api/push/subscriptions", "Delete the caller's subscription of an endpoint",
       "push", USER, request=push.PushUnsubscribe, status=204, errors=(403, 422)),
    # ---- email (docs/delivery.md, "Email") ----
    Op("GET", "/api/unsubscribe",
       "A page confirming an email unsubscribe link; changes nothing (a button POSTs)",
       "email", NONE, response="Page", media_type="text/html", errors=(422,),
       params=(UNSUBSCRIBE_TOKEN,)),
    Op("POST", "/api/unsubscribe",
       "One-click unsubscribe (RFC 8058): turn the token's type off for email",
       "email", NONE, response="Page", media_type="text/html", errors=(413, 422),
       params=(UNSUBSCRIBE_TOKEN,)),
    # ---- delivery (docs/delivery.md) ----
    Op("GET", "/api/users/{user_id}/contact", "A user's contact (admin or API key)",
       "delivery", ADMIN, response=m.StoredContact, errors=(403, 404, 422),
       params=(Param("user_id", "path", USER_ID, "whose contact", True),)),
    Op("PUT", "/api/users/{user_id}/contact",
       "Store a user's contact whole: email, phone, locale, time zone (admin or API key)",
       "delivery", ADMIN, request=m.Contact, response=m.StoredContact, errors=(403, 422),
       params=(Param("user_id", "path", USER_ID, "whose contact", True),)),
    Op("DELETE", "/api/users/{user_id}/contact", "Forget a user's contact (admin or API key)",
       "delivery", ADMIN, status=204, errors=(403, 404, 422),
       params=(Param("user_id", "path", USER_ID, "whose contact", True),)),
    Op("GET", "/api/notifications/{id}/deliveries",
       "Each channel's delivery of a notification (admin or API key)",
       "delivery", ADMIN, response=m.DeliveryList, errors=(403, 404), params=(ID,)),
    # ---- operations ----
    Op("GET", "/health", "Liveness: 200 while the process runs", "operations", NONE,
       response=m.Health),
    Op("GET", "/ready", "Readiness: 503 names the dependency that is down", "operations",
       NONE, response="Readiness", also=(503,)),
    Op("GET", "/metrics", "Prometheus metrics", "operations", NONE, response="Metrics",
       media_type="text/plain"),
    Op("GET", "/openapi.json", "This document", "operations", NONE, response="OpenAPI"),
    Op("GET", "/demo/token", "A user token (demo mode only; 404 otherwise)", "operations",
       NONE, response="DemoToken", errors=(404, 422), demo_only=True,
       params=(Param("user_id", "query", USER_ID, "who the token is for", True),
               _q("admin", BOOL, "include the admin role"))),
)

EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
    "Readiness": {
        "type": "object",
        "properties": {
            "database": {"enum": ["ok", "down"]},
            "broker": {"enum": ["ok", "down"]},
        },
        "required": ["database", "broker"],
    },
    "DemoToken": {
        "type": "object",
        "properties": {
            "user_id": {"type": "string"},
            "token": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds"},
        },
        "required": ["user_id", "token", "expires_in"],
    },
    # For text/event-stream, OpenAPI 3.1 has ``schema`` describe one event.
    "EventStream": {
        "type": "object",
        "description": "One server-sent event: `event: <type>`, `data: <json>` and "
                       "`id: <seq>` (absent when seq is null); a comment line at least "
                       "every 15 s keeps the stream open",
        "properties": {
            "event": {"type": "string", "description": "the event type, e.g. `hello`"},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "description": "the event's JSON payload"},
            "id": {"type": "string", "description": "the event's seq, for Last-Event-ID"},
            "retry": {"type": "integer", "description": "reconnection delay in ms"},
        },
        "required": ["event", "data"],
    },
    "Metrics": {"type": "string", "description": "Prometheus text exposition format"},
    "Page": {"type": "string", "description": "a short HTML page for a person"},
    "OpenAPI": {"type": "object", "description": "an OpenAPI 3.1 document"},
}

ERROR_TEXT = {
    401: "no or bad credentials",
    403: "not allowed",
    404: "missing, or not the caller's",
    409: "conflicts with stored state",
    413: "body too large",
    415: "the body is not sent as application/json",
    422: "invalid input",
    429: "rate limited",
    503: "a dependency (database, broker) is down",
}


def _operation_id(op: Op) -> str:
    return op.method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", op.path.lower()).strip("_")


Refs = dict[tuple[Any, str], dict[str, Any]]


def _schemas() -> tuple[Refs, dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m.Problem, "serialization")]
    for op in ROUTES:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        if isinstance(op.response, type):
            wanted.append((op.response, "serialization"))
        wanted.extend((model, "serialization") for _, models in op.other for model in models)
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    schemas = dict(defs.get("$defs", {}))
    for name, schema in EXTRA_SCHEMAS.items():
        schemas[name] = schema
    return {k: dict(v) for k, v in refs.items()}, schemas


def _operation(op: Op, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
        "security": [{scheme: []} for scheme in op.security],
    }
    if op.params:
        out["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema,
             "description": p.description}
            for p in op.params
        ]
    if op.request is not None:
        out["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status in (op.status, *op.also):
        if status == 204:
            responses["204"] = {"description": "done; no content"}
            continue
        models = dict(op.other).get(status)
        if models is not None:
            schema = refs[(models[0], "serialization")] if len(models) == 1 else {
                "anyOf": [refs[(model, "serialization")] for model in models]}
        elif isinstance(op.response, type):
            schema = refs[(op.response, "serialization")]
        elif isinstance(op.response, str):
            schema = {"$ref": REF.format(model=op.response)}
        else:
            schema = {}
        responses[str(status)] = {
            "description": _success_text(op, status),
            "content": {op.media_type: {"schema": schema}},
        }
    errors = set(op.errors)
    if any(p.where == "path" for p in op.params):
        errors.add(404)  # a path the route does not match (an empty segment, say)
    if op.security:
        errors.add(401)
    if op.request is not None:
        errors |= {413, 415, 422}
    if op.path.startswith("/api/"):
        errors.add(503)
    if op.path not in ("/health", "/ready", "/metrics"):
        errors.add(429)  # api/ratelimit.py; answered with a Retry-After header
    problem = {"application/problem+json": {"schema": refs[(m.Problem, "serialization")]}}
    for status in sorted(errors - {int(s) for s in responses}):
        responses[str(status)] = {"description": ERROR_TEXT[status], "content": problem}
    out["responses"] = responses
    return out


def _success_text(op: Op, status: int) -> str:
    if status == 503:
        return "not ready"
    if status == 200 and op.status == 201:
        return "a repeated request: the original result, nothing new created"
    if status == 202:
        return "scheduled: stored, and created at its send_at"
    return "success"


def _version() -> str:
    try:
        return metadata.version("notifyhub")
    except metadata.PackageNotFoundError:
        # Run from a source tree that is not installed: pyproject.toml is the one place
        # that names the version, so none is made up here (as ``notifyhub --version``).
        return "(not installed)"


@cache
def document(demo: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API (built once per mode; it only depends on
    code). ``demo``: the hub runs in demo mode, so ``/demo/token`` exists and is listed."""
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in ROUTES:
        if op.demo_only and not demo:
            continue
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notifyhub",
            "version": _version(),
            "description": (
                "REST API of notifyhub, a real-time notification hub. Errors are "
                "application/problem+json (RFC 9457). The WebSocket endpoint "
                "`GET /ws?token=<jwt>&since=<seq>` (or the token as "
                "`Authorization: Bearer`) carries the same events as `/api/stream`; it is "
                "described in the project's docs (docs/live.md), not here."
            ),
        },
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in ROUTES)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "a user JWT; admin routes need roles: [admin]"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "a backend service key (HUB_API_KEYS)"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "a user JWT as ?token=, accepted only by "
                                              "the live stream"},
            },
        },
    }
