"""Request and response shapes of the REST API (docs/api.md), as pydantic models.

Request models validate input at the edge; response models document the output in
``/openapi.json``. Stored rows travel as plain dicts shaped like the response models.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeGuard, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hub.errors import InvalidInput

#: The longest user id, in characters: OpenID Connect's limit for ``sub`` (255 ASCII).
MAX_USER_ID_CHARS = 255
#: A user id: 1-255 characters, none of them a C0 or C1 control character (NUL cannot be
#: stored in PostgreSQL text; the others would break log lines) or a lone surrogate (not
#: encodable as UTF-8). Anything else is an id: ``auth0|…``, ``ann+tag@example.com``,
#: ``team/ann``, ``100%``, spaces, any script. Match with ``fullmatch`` (``$`` alone would
#: accept a trailing newline); the pattern is also the JSON Schema of ``/openapi.json``.
#: ``.`` and ``..`` are refused: browsers resolve them (even as ``%2E``) as path steps.
USER_ID_RE = re.compile(
    rf"^(?!\.\.?$)[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{{1,{MAX_USER_ID_CHARS}}}$"
)
USER_ID_RULE = (
    f"a user id is 1-{MAX_USER_ID_CHARS} characters, none of them a control character, "
    "and not . or .."
)
MAX_DATA_BYTES = 16 * 1024
MAX_USER_IDS = 1000
#: How far ahead ``send_at`` may be.
MAX_SEND_AHEAD_DAYS = 365


def valid_user_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a user id (a string matching ``USER_ID_RE``, docs/api.md)."""
    return isinstance(value, str) and USER_ID_RE.fullmatch(value) is not None


def check_user_id(value: str) -> str:
    """Return ``value`` if it is a valid user id (``valid_user_id``); ValueError if not."""
    if not valid_user_id(value):
        raise ValueError(USER_ID_RULE)
    return value


def check_data(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_DATA_BYTES:
        raise ValueError("data must be at most 16 KiB as JSON")
    return value


UserId = Annotated[str, AfterValidator(check_user_id)]
Data = Annotated[dict[str, Any], AfterValidator(check_data)]
Priority = Literal["low", "normal", "high"]
PRIORITIES = ("low", "normal", "high")
Level = Literal["info", "warning", "critical"]
Digest = Literal["off", "hourly", "daily", "weekly"]


def _nul_path(value: Any, path: list[Any]) -> list[Any] | None:
    """Where in ``value`` a NUL character hides (PostgreSQL text cannot store it)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return [*path, key]
            found = _nul_path(item, [*path, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, [*path, index])
            if found is not None:
                return found
    return None


class Strict(BaseModel):
    """Input models: no unknown fields, no type coercion ("1" is not 1), no NUL characters."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        where = _nul_path(value, [])
        if where is not None:
            raise ValueError(f"NUL characters are not allowed (at {'.'.join(map(str, where))})")
        return value


M = TypeVar("M", bound=BaseModel)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc","msg"}`` entries (no input echoed back)."""
    return [
        {"loc": list(e["loc"]), "msg": str(e["msg"]).removeprefix("Value error, ")}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


#: The deepest nesting of objects and arrays accepted in any JSON the hub is sent
#: (REST bodies, WebSocket frames, ingest entries); the outermost object is level 1.
MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels (no recursion,
    so any depth is measured safely)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def validate(model: type[M], value: Any, what: str = "the body") -> M:
    """``value`` (decoded JSON) validated as ``model``; InvalidInput listing the fields.

    Checked before anything walks it: nested deeper than ``MAX_DEPTH`` is refused.
    """
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    if too_deep(value):
        raise InvalidInput(f"{what} nests objects and arrays more than {MAX_DEPTH} levels deep")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidInput("the request is not valid", validation_errors(exc)) from None


# ---- contacts ------------------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")
_PHONE = re.compile(r"^\+[0-9]{8,15}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def _check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or '"' in value or "<" in value or ">" in value:
        raise ValueError("must be an email address like ann@example.com")
    return value


def _check_phone(value: str) -> str:
    if not _PHONE.fullmatch(value):
        raise ValueError("must be an E.164 number: + and 8-15 digits, like +14155550123")
    return value


def _check_locale(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError("must be a BCP 47 language tag like en or pt-BR")
    return value


def _check_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if value == "localtime":  # this machine's zone file, not a name PostgreSQL knows
            raise ValueError(value)
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError("must be an IANA time zone like Europe/Paris") from exc
    return value


class Contact(Strict):
    """A user's addresses for delivery (``PUT /api/users/{id}/contact``, inline
    ``contact`` on create); every field is optional."""

    email: Annotated[str, Field(max_length=254), AfterValidator(_check_email)] | None = None
    phone: Annotated[str, Field(max_length=16), AfterValidator(_check_phone)] | None = None
    locale: Annotated[str, Field(max_length=35), AfterValidator(_check_locale)] | None = None
    time_zone: Annotated[str, Field(max_length=64), AfterValidator(_check_zone)] | None = None


class StoredContact(BaseModel):
    user_id: str
    email: str | None
    phone: str | None
    locale: str | None
    time_zone: str | None
    updated_at: datetime


class DeliveryState(BaseModel):
    channel: str
    state: Literal["scheduled", "held", "digest", "sent", "failed", "skipped"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    claimed_until: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryState]


# ---- notifications -------------------------------------------------------------------


#: The most actions one notification may carry.
MAX_ACTIONS = 3
#: An action id: 1-64 letters, digits, ``_``, ``.`` or ``-`` (safe in a URL path as is).
ACTION_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ActionStyle = Literal["primary", "secondary"]


class ActionButton(BaseModel):
    """One of a notification's actions, as stored and shown (docs/api.md, "Action
    buttons")."""

    id: str
    label: str
    url: str | None
    style: ActionStyle


class ChosenAction(BaseModel):
    """The action its user chose, and when."""

    id: str
    acted_at: datetime


class Notification(BaseModel):
    id: int
    user_id: str
    type: str
    title: str
    body: str
    link: str | None
    data: dict[str, Any]
    priority: Priority
    read: bool
    read_at: datetime | None
    #: Shown by the bell (``POST /api/notifications/seen``); reading implies seeing.
    seen: bool
    seen_at: datetime | None
    archived: bool
    archived_at: datetime | None
    #: While snoozed: when it returns to the inbox (as new, unread and unseen).
    snoozed_until: datetime | None
    #: Its place in the inbox, newest highest: its id, or a new number once it returned
    #: from a snooze. The ``before`` cursor and ``before_id`` compare it.
    position: int
    created_at: datetime
    expires_at: datetime | None
    #: Its action buttons, in order; ``[]`` when it has none.
    actions: list[ActionButton]
    #: The action its user chose (``POST /api/notifications/{id}/actions/{action_id}``).
    action: ChosenAction | None
    #: Its group's key (docs/api.md, "Grouping"); null: not grouped.
    collapse_key: str | None = None
    #: How many creates its group absorbed (1: just its own).
    group_count: int = 1
    #: Its group's most recent actors, newest first, distinct, at most 5.
    actors: list[str] = []


class ActedNotification(Notification):
    """The answer of choosing an action: the notification as it is now, and its user's
    unread and unseen counts (the event ``notification.updated`` carries the same as
    ``{"notification", "unread_count", "unseen_count"}``)."""

    unread_count: int
    unseen_count: int


class NotificationPage(BaseModel):
    items: list[Notification]
    #: The ``position`` of the page's last item, to pass as ``before``; null on the last page.
    next_before: int | None
    unread_count: int
    unseen_count: int


#: Idempotency keys ingest gives stream entries that bring none (``stream:<entry id>``).
RESERVED_KEY_PREFIX = "stream:"


def safe_link(link: str) -> bool:
    """Whether ``link`` is an http(s) URL or a path on this site (no ``javascript:``,
    ``data:``, ``vbscript:`` or other scheme a client might follow)."""
    text = link.strip()
    if text.startswith("//"):  # scheme-relative: another host, over either scheme
        return True
    head = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if ":" not in head:
        return True  # relative: no scheme before the first /, ? or #
    return head.split(":", 1)[0].lower() in ("http", "https")


def _check_label(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _check_action_link(value: str | None) -> str | None:
    if value is not None and not safe_link(value):
        raise ValueError("must be an http(s) URL or a path on this site")
    return value


class Action(Strict):
    """One action button of a create (docs/api.md, "Action buttons")."""

    id: str = Field(pattern=ACTION_ID_RE.pattern)
    label: Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_check_label)]
    url: Annotated[str | None, Field(max_length=2000), AfterValidator(_check_action_link)] = None
    style: ActionStyle = "secondary"


def _distinct_ids(actions: list[Action] | None) -> list[Action] | None:
    if actions is not None and len({a.id for a in actions}) != len(actions):
        raise ValueError("action ids must be distinct")
    return actions


def stored_actions(actions: list[Action] | None) -> list[dict[str, Any]] | None:
    """``actions`` as stored (every field present), or None when there are none."""
    return None if not actions else [a.model_dump() for a in actions]


class NotificationCreate(Strict):
    """Body of ``POST /api/notifications``; either ``template`` or ``title`` is required."""

    user_id: UserId | None = None
    user_ids: list[UserId] | None = Field(default=None, min_length=1, max_length=MAX_USER_IDS)
    type: str = Field(min_length=1, max_length=100)
    template: str | None = Field(default=None, min_length=1, max_length=100)
    data: Data = Field(default_factory=dict)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, max_length=2000)
    link: str | None = Field(default=None, max_length=2000)
    priority: Priority = "normal"
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    #: The single recipient's contact, upserted with the notification (docs/delivery.md).
    contact: Contact | None = None
    #: When the notification leaves the inbox and stops being delivered (RFC 3339, with
    #: a time zone, in the future; within the retention horizon, checked at commit).
    expires_at: datetime | None = Field(default=None, strict=False)
    #: When to send it (RFC 3339, with a time zone): later than a second from now, it is
    #: stored and sent then (docs/delivery.md, "Scheduled notifications"); earlier, now.
    send_at: datetime | None = Field(default=None, strict=False)
    #: 1-3 buttons its user may choose one of, once (docs/api.md, "Action buttons").
    actions: Annotated[
        list[Action] | None,
        Field(min_length=1, max_length=MAX_ACTIONS),
        AfterValidator(_distinct_ids),
    ] = None
    #: Groups it with the recipient's unread notification with this key (docs/api.md,
    #: "Grouping").
    collapse_key: str | None = Field(default=None, min_length=1, max_length=200)
    #: Who caused it (e.g. "Ada"), kept on its group and shown by ``{actor}``.
    actor: str | None = Field(default=None, min_length=1, max_length=100)

    def recipients(self) -> list[str]:
        """The distinct target users, in the order given."""
        ids = list(self.user_ids or [])
        if self.user_id is not None:
            ids.insert(0, self.user_id)
        return list(dict.fromkeys(ids))

    @model_validator(mode="after")
    def _check(self) -> Any:
        if self.user_id is None and not self.user_ids:
            raise ValueError("user_id or user_ids is required")
        if self.user_id is not None and self.user_ids is not None:
            raise ValueError("give user_id or user_ids, not both")
        if self.template is None and self.title is None:
            raise ValueError("template or title is required")
        if self.contact is not None and len(self.recipients()) != 1:
            raise ValueError("contact is for a single recipient: give user_id (or one "
                             "user in user_ids)")
        return self

    @field_validator("expires_at", "send_at", mode="before")
    @classmethod
    def _timestamp_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 timestamp with a time zone")
        return value

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            raise ValueError("must include a time zone")
        if value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            raise ValueError("must include a time zone")
        if value > datetime.now(UTC) + timedelta(days=MAX_SEND_AHEAD_DAYS):
            raise ValueError(f"must be within {MAX_SEND_AHEAD_DAYS} days")
        expires_at = info.data.get("expires_at")
        if expires_at is not None and value >= expires_at:
            raise ValueError("must be before expires_at")
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(RESERVED_KEY_PREFIX):
            raise ValueError(f"keys starting with {RESERVED_KEY_PREFIX!r} are reserved for "
                             "Redis stream ingest")
        return value

    @field_validator("link")
    @classmethod
    def _safe_link(cls, value: str | None) -> str | None:
        if value is not None and not safe_link(value):
            raise ValueError("link must be an http(s) URL or a path on this site")
        return value


class CreateResult(BaseModel):
    items: list[Notification]
    suppressed: list[str]
    #: The create joined a group (``collapse_key``) instead of making a notification;
    #: on a replay: whether an item counts more than one create.
    grouped: bool = False


class ScheduledNotification(BaseModel):
    """A notification waiting for its ``send_at`` (docs/delivery.md, "Scheduled
    notifications"): its content is rendered; its recipients' preferences are applied
    when it is sent."""

    id: int
    status: Literal["scheduled"]
    send_at: datetime
    user_ids: list[str]
    type: str
    title: str
    body: str
    link: str | None
    data: dict[str, Any]
    priority: Priority
    expires_at: datetime | None
    created_at: datetime
    actions: list[ActionButton]


class ScheduledPage(BaseModel):
    items: list[ScheduledNotification]
    next_before: int | None


#: A database id: a positive 64-bit integer.
Id = Annotated[int, Field(gt=0, lt=2**63)]


class MarkRead(Strict):
    ids: list[Id] = Field(max_length=1000)


class MarkAllRead(Strict):
    before_id: Id | None = None


class Selection(Strict):
    """Which of the caller's notifications: ``ids`` (1-1000 of them), or every one in the
    box with ``position <= before_id`` (docs/api.md, "The inbox")."""

    ids: list[Id] | None = Field(default=None, max_length=1000)
    before_id: Id | None = None

    @model_validator(mode="after")
    def _one(self) -> Any:
        if (self.ids is None) == (self.before_id is None):
            raise ValueError("give ids or before_id (one of them)")
        return self


class UpdatedCount(BaseModel):
    updated: int
    unread_count: int
    unseen_count: int


class UnreadCount(BaseModel):
    #: Unread notifications in the inbox.
    count: int
    #: Unseen notifications in the inbox (each of them is unread too).
    unseen: int


#: How far ahead a snooze may last.
MAX_SNOOZE_DAYS = 365


class Snooze(Strict):
    """Body of ``POST /api/notifications/{id}/snooze``."""

    #: When the notification returns (RFC 3339 with a time zone; in the future, within
    #: ``MAX_SNOOZE_DAYS`` and before the notification's ``expires_at``).
    until: datetime = Field(strict=False)

    @field_validator("until", mode="before")
    @classmethod
    def _timestamp_text(cls, value: Any) -> Any:
        if not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 timestamp with a time zone")
        return value

    @field_validator("until")
    @classmethod
    def _in_the_future(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must include a time zone")
        now = datetime.now(UTC)
        if value <= now:
            raise ValueError("must be in the future")
        if value > now + timedelta(days=MAX_SNOOZE_DAYS):
            raise ValueError(f"must be within {MAX_SNOOZE_DAYS} days")
        return value


class Snoozed(BaseModel):
    """What a snooze answers, and the data of its ``notification.snoozed`` event."""

    id: int
    snoozed_until: datetime
    unread_count: int
    unseen_count: int


# ---- preferences ---------------------------------------------------------------------

HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class QuietHours(Strict):
    start: HHMM
    end: HHMM
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value


#: The channels a preference may name: the hub delivers ``in_app`` itself, the others
#: through delivery workers when the channel is configured (docs/delivery.md).
CHANNELS = ("in_app", "email", "push", "sms", "webhook")
Channel = Literal["in_app", "email", "push", "sms", "webhook"]
DEFAULT_CHANNELS: dict[Channel, bool] = {
    "in_app": True, "email": True, "push": False, "sms": False, "webhook": False,
}
#: The most per-type entries one user's preferences may hold.
MAX_TYPES = 200


def _known_channels(value: Any) -> Any:
    # One error for the whole map (not one per key, which could be thousands), and
    # without the offending name: the input is never echoed back.
    if isinstance(value, dict) and any(key not in CHANNELS for key in value):
        raise ValueError("the only channels are in_app, email, push, sms and webhook")
    return value


def _at_most_types(value: Any) -> Any:
    # Counted before the entries are validated, so 30,000 types cost one error.
    if isinstance(value, dict) and len(value) > MAX_TYPES:
        raise ValueError(f"at most {MAX_TYPES} types")
    return value


def _only_known(channels: dict[str, Any]) -> dict[str, Any]:
    return {key: on for key, on in channels.items() if key in CHANNELS}


ChannelMap = Annotated[dict[Channel, bool], BeforeValidator(_known_channels)]
TypeName = Annotated[str, Field(min_length=1, max_length=100)]
TypeMap = Annotated[
    dict[TypeName, ChannelMap], BeforeValidator(_at_most_types), Field(max_length=MAX_TYPES)
]


class Preferences(Strict):
    muted: bool = False
    channels: ChannelMap = Field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    types: TypeMap = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    digest: Digest = "off"
    #: Others see the user offline with no last-seen time, and get no presence events.
    hide_presence: bool = False

    @classmethod
    def load(cls, doc: dict[str, Any]) -> Preferences:
        """A stored document as Preferences.

        Earlier versions stored any lower-case channel name; names other than
        ``CHANNELS`` are left out, so what loads can be sent back unchanged.
        """
        doc = dict(doc)
        if isinstance(doc.get("channels"), dict):
            doc["channels"] = _only_known(doc["channels"])
        if isinstance(doc.get("types"), dict):
            doc["types"] = {
                type_: _only_known(channels) if isinstance(channels, dict) else channels
                for type_, channels in doc["types"].items()
            }
        return cls.model_validate(doc)

    def allows_in_app(self, type_: str) -> bool:
        """Whether a notification of ``type_`` goes to the inbox (docs/api.md, "Preferences")."""
        if self.muted:
            return False
        per_type = self.types.get(type_, {})
        if "in_app" in per_type:
            return per_type["in_app"]
        return self.channels.get("in_app", True)

    def allows(self, type_: str, channel: str) -> bool:
        """Whether a notification of ``type_`` goes out on ``channel`` (per-type setting
        first, then the channel's, then its default); never when muted."""
        if self.muted:
            return False
        per_type = self.types.get(type_, {})
        on = per_type.get(channel)  # type: ignore[call-overload]
        if on is None:
            on = self.channels.get(channel, DEFAULT_CHANNELS.get(channel, False))  # type: ignore[call-overload]
        return bool(on)


class PreferencesPatch(Strict):
    """Body of ``PATCH /api/notifications/preferences``: only what is given changes.

    ``channels`` is merged key by key, ``types`` type by type and, within a type,
    channel by channel; ``quiet_hours: null`` removes the quiet hours.
    """

    muted: bool | None = None
    channels: ChannelMap | None = None
    types: TypeMap | None = None
    quiet_hours: QuietHours | None = None
    digest: Digest | None = None
    hide_presence: bool | None = None

    def apply(self, prefs: Preferences) -> Preferences:
        """``prefs`` with this patch applied; InvalidInput if the result breaks a limit."""
        doc = prefs.model_dump(mode="json")
        given = self.model_dump(mode="json", exclude_unset=True)
        for name in ("muted", "digest", "quiet_hours", "hide_presence"):
            if name in given and (given[name] is not None or name == "quiet_hours"):
                doc[name] = given[name]
        doc["channels"].update(given.get("channels") or {})
        for type_, channels in (given.get("types") or {}).items():
            doc["types"].setdefault(type_, {}).update(channels)
        return validate(Preferences, doc, "the patched preferences")


# ---- direct messages -----------------------------------------------------------------


class Message(BaseModel):
    id: int
    sender_id: str
    recipient_id: str
    body: str
    client_id: str | None
    created_at: datetime
    read_at: datetime | None


class MessageSend(Strict):
    recipient_id: UserId
    body: str = Field(min_length=1, max_length=4000)
    client_id: str | None = Field(default=None, min_length=1, max_length=100)


class Conversation(BaseModel):
    user_id: str
    last_message: Message
    unread_count: int


class ConversationList(BaseModel):
    items: list[Conversation]


class MessagePage(BaseModel):
    items: list[Message]
    next_before: int | None


class MessagesMarkRead(Strict):
    ids: list[int] | None = Field(default=None, max_length=1000)
    user_id: UserId | None = None

    @model_validator(mode="after")
    def _check(self) -> Any:
        if (self.ids is None) == (self.user_id is None):
            raise ValueError("give either ids or user_id")
        return self


class Updated(BaseModel):
    updated: int


# ---- presence ------------------------------------------------------------------------


class UserPresence(BaseModel):
    user_id: str
    online: bool
    last_seen: datetime | None


class PresenceList(BaseModel):
    items: list[UserPresence]


# ---- announcements and templates -----------------------------------------------------


class Announcement(BaseModel):
    id: int
    title: str
    body: str
    level: Level
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime


class AnnouncementCreate(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=2000)
    level: Level = "info"
    starts_at: datetime | None = Field(default=None, strict=False)
    ends_at: datetime | None = Field(default=None, strict=False)

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an ISO 8601 timestamp with a time zone")
        return value

    @model_validator(mode="after")
    def _check(self) -> Any:
        for name in ("starts_at", "ends_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must include a time zone")
            if value is not None and not 2000 <= value.year <= 9999:
                raise ValueError(f"{name} must be between the years 2000 and 9999")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class AnnouncementList(BaseModel):
    items: list[Announcement]


class TemplateGrouped(Strict):
    """A template's text for a group of notifications (docs/api.md, "Grouping"): its
    data's placeholders and ``{actor}``, ``{others}``, ``{count}``; ``body`` None: the
    newest create's body; ``someone``: what ``{actor}`` says when no create gave an
    actor (None: ``Someone``)."""

    title: str = Field(min_length=1, max_length=200)
    body: str | None = Field(default=None, max_length=2000)
    someone: str | None = Field(default=None, min_length=1, max_length=100)


class TemplateVariant(Strict):
    """A template's text in one locale; ``link`` None: the template's own link;
    ``grouped`` None: a group in this locale is titled ``{title} ({count})``."""

    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=2000)
    link: str | None = Field(default=None, max_length=2000)
    grouped: TemplateGrouped | None = None


#: The most locale variants one template may have.
MAX_TEMPLATE_LOCALES = 50


def _check_locales(value: dict[str, TemplateVariant]) -> dict[str, TemplateVariant]:
    if len(value) > MAX_TEMPLATE_LOCALES:
        raise ValueError(f"at most {MAX_TEMPLATE_LOCALES} locales")
    seen: set[str] = set()
    for tag in value:
        _check_locale(tag)
        if tag.lower() in seen:
            raise ValueError(f"locale {tag!r} is given twice (tags are case-insensitive)")
        seen.add(tag.lower())
    return value


class Template(BaseModel):
    key: str
    type: str
    title: str
    body: str
    link: str | None
    locales: dict[str, TemplateVariant] = {}
    grouped: TemplateGrouped | None = None


class TemplatePut(Strict):
    type: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=2000)
    link: str | None = Field(default=None, max_length=2000)
    locales: Annotated[dict[str, TemplateVariant], AfterValidator(_check_locales)] = {}
    grouped: TemplateGrouped | None = None


class TemplateList(BaseModel):
    items: list[Template]


# ---- operations ----------------------------------------------------------------------


class Health(BaseModel):
    status: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
