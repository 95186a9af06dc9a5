"""The one settings object, read from ``HUB_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
#: The days a weekly digest may end on (``HUB_DIGEST_WEEKDAY``), Monday first.
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                  "sunday"]


class SettingsError(Exception):
    """A configuration value is unusable; the message is one line naming the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything notifyhub can be configured with; built once and passed explicitly."""

    model_config = SettingsConfigDict(
        env_prefix="HUB_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = None
    # A pooler between the hub and PostgreSQL (docs/configuration.md, "Behind
    # PgBouncer"): "transaction" when HUB_DATABASE_URL leads to transaction pooling.
    database_pooler: Literal["none", "transaction"] = "none"
    redis_url: str | None = None
    data_dir: Path = Path(".notifyhub")
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_prefix: str = "hub:"

    retention_days: int = Field(default=90, ge=1)
    history_days: int = Field(default=7, ge=7)
    history_min_events: int = Field(default=1000, ge=1000)
    cleanup_interval_seconds: float = Field(default=3600.0, gt=0)
    # Expiring notifications (docs/delivery.md): how often the sweeper deletes them.
    expiry_sweep_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # HTTP transport limits (docs/api.md, "Connection limits"); max_connections None:
    # derived from the file-descriptor limit at start.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    keepalive_seconds: float = Field(default=5.0, gt=0)
    max_connections: int | None = Field(default=None, ge=1)
    ws_max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_per_message_deflate: bool = False
    outbox_max_events: int = Field(default=1000, ge=1)
    outbox_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    head_check_seconds: float = Field(default=2.0, gt=0)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    # A database that accepts connections but never answers (docs/configuration.md).
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    db_acquire_timeout_seconds: float = Field(default=2.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=3.0, ge=0.001)
    # Rate limits (docs/rate-limits.md); a rate of 0 disables that limit.
    rate_limit_per_second: float = Field(default=20.0, ge=0)
    rate_limit_burst: int = Field(default=60, ge=1)
    rate_limit_ip_per_second: float = Field(default=100.0, ge=0)
    rate_limit_ip_burst: int = Field(default=300, ge=1)
    rate_limit_writes_per_second: float = Field(default=5.0, ge=0)
    rate_limit_writes_burst: int = Field(default=50, ge=1)
    rate_limit_api_key_per_second: float = Field(default=1000.0, ge=0)
    rate_limit_api_key_burst: int = Field(default=2000, ge=1)
    ws_frames_per_second: float = Field(default=20.0, ge=0)
    ws_frames_burst: int = Field(default=40, ge=1)
    max_connections_per_user: int = Field(default=20, ge=1)
    # Presence (docs/live.md, "Presence"): a user's instances refresh their presence
    # every third of the TTL; offline is announced after the debounce.
    presence_ttl_seconds: float = Field(default=30.0, gt=0, le=3600)
    presence_debounce_seconds: float = Field(default=5.0, ge=0, le=3600)
    presence_last_seen_days: int = Field(default=30, ge=1, le=3650)
    ingest_claim_idle_seconds: float = Field(default=30.0, gt=0)
    ingest_stop_grace_seconds: float = Field(default=5.0, ge=0)
    # Ingest streams (docs/ingest.md, "Several streams"): 1 is {prefix}ingest alone.
    ingest_streams: int = Field(default=1, ge=1, le=64)
    # Action buttons (docs/ingest.md, "Action choices"): the {prefix}actions stream is
    # capped near this many entries (XADD MAXLEN ~).
    actions_stream_maxlen: int = Field(default=100_000, ge=1)
    # Delivery workers (docs/delivery.md): concurrent sends per process (0: none here).
    delivery_workers: int = Field(default=4, ge=0, le=256)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    delivery_backoff_seconds: float = Field(default=10.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    delivery_lease_seconds: float = Field(default=120.0, ge=1)
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    # Quiet hours (docs/delivery.md, "Quiet hours"): priority high is not held.
    quiet_hours_bypass_high: bool = True
    # Escalate when unseen (docs/delivery.md): these types' email/push/SMS wait, and are
    # skipped if the notification was read meanwhile.
    escalate_types: Annotated[list[str], NoDecode] = Field(default_factory=list)
    escalate_after_seconds: float = Field(default=300.0, ge=0)
    # Digests (docs/delivery.md, "Digests"): daily and weekly periods end at this hour
    # of the user's wall clock, weekly ones on this day.
    digest_hour: int = Field(default=8, ge=0, le=23)
    digest_weekday: Weekday = "monday"
    # Web push (docs/delivery.md, "Web push"): off without a key outside demo mode.
    vapid_subject: str | None = None
    vapid_private_key: str | None = None
    push_ttl_seconds: int = Field(default=86400, ge=0, le=28 * 86400)
    push_allow_http_loopback: bool = False

    @field_validator("api_keys", "allowed_origins", "escalate_types", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("digest_weekday", mode="before")
    @classmethod
    def _weekday(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _checked_url(value, ("postgres", "postgresql"), "must be a postgresql:// URL",
                     host=False)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = _checked_url(
            value, ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
            "must be a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL",
            host=False)
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("has no host")
        if parts.scheme.endswith("+cluster") and parts.path.strip("/") not in ("", "0"):
            raise ValueError("names a database other than 0, which a Redis Cluster has not")
        return value

    @field_validator("jwt_secret", "unsubscribe_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            load_pem_public_key(value.encode())
        except Exception:
            raise ValueError("must be a PEM public key (RSA or EC)") from None
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _vapid_subject(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not (value.startswith("mailto:") and "@" in value) and not (
            value.startswith("https://") and urlsplit(value).hostname
        ):
            raise ValueError("must be a mailto: address or an https:// URL")
        return value

    @field_validator("vapid_private_key")
    @classmethod
    def _vapid_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            return None
        from hub.vapid import load_private_key

        try:
            load_private_key(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if info.data.get("vapid_subject") is None:
            raise ValueError("needs HUB_VAPID_SUBJECT (mailto: or https:) beside it")
        return value.strip()

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in (
                "", "/"
            ) or parts.query:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/") for origin in value]

    @field_validator("redis_prefix")
    @classmethod
    def _prefix(cls, value: str, info: ValidationInfo) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be non-empty and without spaces")
        if "+cluster://" in (info.data.get("redis_url") or "") and ("{" in value or "}" in value):
            # A hash tag in the prefix would put every user channel in one slot.
            raise ValueError("must not contain { or } on a Redis Cluster")
        return value

    # Email (docs/delivery.md, "Email"). No smtp_url: the email channel is off. Defined
    # after what it needs, so _smtp_url can check those were given (info.data).
    public_url: str | None = None
    email_from: str | None = None
    unsubscribe_secret: str | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    smtp_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                or parts.fragment:
            raise ValueError("must be an http(s):// URL like https://hub.example.com")
        return value.rstrip("/")

    @field_validator("email_from")
    @classmethod
    def _email_from(cls, value: str | None) -> str | None:
        from email.utils import parseaddr

        if value is None or value.strip() == "":
            return None
        _, address = parseaddr(value)
        local, _, domain = address.rpartition("@")
        if not local or "." not in domain or any(c in value for c in "\r\n"):
            raise ValueError("must be an address like hub@example.com or "
                             "'Name <hub@example.com>'")
        return value.strip()

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        from urllib.parse import parse_qs

        if value is None or value == "":
            return None
        parts = _checked_url(value, ("smtp", "smtps"),
                             "must be smtp://[user:pass@]host[:port] or smtps://…")
        query = parse_qs(parts.query)
        if set(query) - {"starttls"} or query.get("starttls", ["false"])[-1] not in (
            "true", "false"
        ):
            raise ValueError("takes only ?starttls=true or ?starttls=false")
        if parts.scheme == "smtps" and query.get("starttls", ["false"])[-1] == "true":
            raise ValueError("smtps:// is TLS from the start; ?starttls=true is for smtp://")
        for needed, why in (("public_url", "the hub's address for unsubscribe links"),
                            ("email_from", "the From address")):
            if info.data.get(needed) is None:
                raise ValueError(f"needs HUB_{needed.upper()} ({why}) beside it")
        if info.data.get("jwt_public_key") and not (
            info.data.get("jwt_secret") or info.data.get("unsubscribe_secret")
        ):
            raise ValueError("needs HUB_UNSUBSCRIBE_SECRET (32+ bytes) to sign unsubscribe "
                             "links when tokens are verified with HUB_JWT_PUBLIC_KEY")
        return value

    @property
    def demo_mode(self) -> bool:
        """True when neither a JWT secret nor a public key is configured."""
        return self.jwt_secret is None and self.jwt_public_key is None

    # Webhooks and SMS (docs/delivery.md, "Webhooks and SMS"): each channel is off while
    # its URL is unset; the secret is required beside either (checked after them).
    webhook_url: str | None = None
    sms_webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, validate_default=True)
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=300)

    @field_validator("webhook_url", "sms_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _checked_url(value, ("http", "https"), "must be an http(s):// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        from hub.channels.webhook_signing import decode_secret

        if value is None or value.strip() == "":
            if info.data.get("webhook_url") or info.data.get("sms_webhook_url"):
                raise ValueError(
                    "is required with HUB_WEBHOOK_URL or HUB_SMS_WEBHOOK_URL "
                    "(whsec_ followed by the base64 of 24-64 random bytes)"
                )
            return None
        decode_secret(value.strip())
        return value.strip()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; raise SettingsError with one clear line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"HUB_{field.upper()}: {message}") from None


def demo_secret(settings: Settings) -> str:
    """The demo-mode HS256 secret, created once and kept in the data directory."""
    path = settings.data_dir / "jwt_secret"
    try:
        if path.exists():
            value = path.read_text().strip()
            if len(value) >= MIN_SECRET_BYTES:
                return value
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        # Created 0600 from the start: the secret is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value
    except OSError as exc:
        raise SettingsError(
            f"HUB_DATA_DIR: cannot keep the demo secret in {path}: {exc.strerror or exc}"
        ) from None


def _checked_url(
    value: str, schemes: tuple[str, ...], wrong: str, *, host: bool = True
) -> SplitResult:
    """``value`` split (``urlsplit``); ValueError ``wrong`` for another scheme (or, with
    ``host``, no host), and for a port that is not a number."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or (host and not parts.hostname):
        raise ValueError(wrong)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError("has a bad port") from exc
    return parts
