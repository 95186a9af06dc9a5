"""The ``notifyhub`` command line: ``serve``, ``migrate``, ``token`` and ``publish``.

The CLI is a composition root like the app factory, so it is the one module of ``hub``
that reaches into ``api`` (lazily, inside the commands that run the app or open its
backends). Every failure is one line on stderr, ``notifyhub: <message>``, never a
traceback for a bad value or an unreachable service. Exit codes: 0 success, 1 a runtime
failure (database, Redis or the port unavailable), 2 bad usage, configuration or input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette

from api.server import HubServer, server_config
from db.migrate import migrate
from db.pool import connect, create_pool
from hub import notifications
from hub.errors import HubError, InvalidInput
from hub.models import NotificationCreate, check_user_id
from hub.services import Services
from hub.settings import Settings, SettingsError, load_settings
from hub.tokens import Tokens
from pubsub.errors import BrokerUnavailable

log = logging.getLogger("notifyhub")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8013
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Failures of the outside world (network, database, Redis, the embedded server):
#: reported as one line. Anything else is a bug and keeps its traceback.
EXPECTED = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError, BrokerUnavailable, HubError,
    subprocess.SubprocessError,
)


class CliError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level or ("info" if args.command == "serve" else "warning"))
    try:
        settings = load_settings()
        command: Callable[[Settings, argparse.Namespace], int] = args.run
        return command(settings, args)
    except SettingsError as exc:
        return _fail(str(exc), 2)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return 130


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_rename_uvicorn)
        handler.addFilter(_redact_tokens)
    # pgserver logs every pg_ctl call with its full output at INFO.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, logging.getLogger().level))
    # pgserver asks platformdirs for a runtime dir; root has no XDG_RUNTIME_DIR.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")


def _redact_tokens(record: logging.LogRecord) -> bool:
    # Browsers must put the JWT in ?token= (WebSocket, EventSource): never log it.
    if isinstance(record.args, tuple):
        record.args = tuple(
            _TOKEN_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str) else a
            for a in record.args
        )
    return True


def _rename_uvicorn(record: logging.LogRecord) -> bool:
    # uvicorn logs its lifecycle as "uvicorn.error", which reads like a failure.
    if record.name == "uvicorn.error":
        record.name = "uvicorn"
    return True


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``notifyhub`` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info for serve, warning otherwise)",
    )
    parser = argparse.ArgumentParser(
        prog="notifyhub", description="A real-time notification hub (REST, WebSocket, SSE)."
    )
    parser.add_argument("--version", action="version", version=f"notifyhub {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[common], help="run the hub (applies pending migrations first)"
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate", parents=[common], help="apply pending migrations and exit"
    )
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser(
        "token", parents=[common], help="print a JWT for a user (HS256 deployments)"
    )
    token.add_argument("user_id", metavar="USER_ID")
    token.add_argument("--admin", action="store_true", help='add the "admin" role')
    token.add_argument(
        "--ttl", type=_ttl, default=3600, help="seconds until it expires (default 3600)"
    )
    token.set_defaults(run=_token)

    publish = commands.add_parser(
        "publish", parents=[common], help="create a notification, as POST /api/notifications"
    )
    publish.add_argument("user_id", metavar="USER_ID")
    publish.add_argument("--type", required=True, help="notification type, e.g. grade_posted")
    publish.add_argument("--title", help="required unless --template is given")
    publish.add_argument("--body")
    publish.add_argument("--data", help="a JSON object (template variables, app data)")
    publish.add_argument("--link")
    publish.add_argument("--priority", choices=["low", "normal", "high"])
    publish.add_argument("--template", help="template key, e.g. grade_posted")
    publish.add_argument("--idempotency-key", help="repeating a key creates nothing new")
    publish.set_defaults(run=_publish)
    return parser


# ---- serve ---------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.demo_mode and not is_loopback(args.host):
        raise CliError(
            f"demo mode (no HUB_JWT_SECRET or HUB_JWT_PUBLIC_KEY) listens on loopback only; "
            f"set HUB_JWT_SECRET to listen on {args.host}",
            2,
        )
    from api.app import create_app

    hub_app = create_app(settings)
    app = _GuardedLifespan(hub_app)
    # WebSocket limits, keepalive and the shutdown grace period come from api.server.
    config = server_config(
        app,
        args.host,
        args.port,
        settings,
        log_config=None,  # logging.basicConfig in main() formats uvicorn's records too
        log_level=logging.getLogger().level,
        access_log=args.access_log,
    )
    server = _Server(config, hub_app, lambda port: _print_banner(settings, args.host, port))
    try:
        server.run()  # with uvicorn's loop choice (uvloop when installed)
    except SystemExit:
        # uvicorn exits this way when the lifespan failed or the port cannot be bound.
        if app.error is not None:
            raise CliError(f"cannot start: {_explain(app.error)}") from None
        raise CliError(f"cannot listen on {_url(args.host, args.port)}") from None
    if app.error is not None:
        raise CliError(f"shutdown failed: {_explain(app.error)}")
    log.info("stopped")
    return 0


class _Server(HubServer):
    """The hub's server (drains live connections first on exit), announcing readiness
    and exiting normally on SIGTERM/SIGINT."""

    def __init__(
        self, config: uvicorn.Config, app: Starlette, on_ready: Callable[[int], None]
    ) -> None:
        super().__init__(config, app)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Startup ran the lifespan (migrations, pool, broker) and bound the socket, so a
        # script that waits for the banner can connect as soon as it appears.
        if self.started:
            self._on_ready(self.servers[0].sockets[0].getsockname()[1])

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after shutting down, so the process would die of
        # it; a hub that shut down cleanly exits 0 instead.
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _GuardedLifespan:
    """Wraps the app so a failing startup or shutdown is kept for one line, no traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_without_traceback(message: Any) -> None:
            # Starlette puts the formatted traceback in the message and uvicorn logs it.
            if message["type"].endswith(".failed"):
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, send_without_traceback)
        except Exception as exc:
            self.error = exc
            if not isinstance(exc, EXPECTED):
                log.error("lifespan failed", exc_info=exc)


def _print_banner(settings: Settings, host: str, port: int) -> None:
    url = _url(host, port)
    if settings.database_url:
        database = mask_url(settings.database_url)
    else:
        database = f"embedded PostgreSQL in {settings.data_dir / 'pgdata'}"
    broker = mask_url(settings.redis_url) if settings.redis_url else "in-process"
    lines = [f"notifyhub listening on {url}", f"database: {database}", f"broker: {broker}"]
    if settings.demo_mode:
        lines.append(f"demo mode: open {url}/ (tokens from /demo/token)")
    print("\n".join(lines), flush=True)


# ---- migrate -------------------------------------------------------------------------


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = asyncio.run(_apply_migrations(settings))
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("database is up to date")
    return 0


async def _apply_migrations(settings: Settings) -> list[str]:

    async with _database(settings) as dsn:
        try:
            conn = await connect(dsn)
        except EXPECTED as exc:
            raise CliError(f"cannot connect to the database: {_explain(exc)}") from None
        try:
            return await migrate(conn)
        except EXPECTED as exc:
            raise CliError(f"migration failed: {_explain(exc)}") from None
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    """The DSN to use; the embedded server (if any) is released on exit."""
    from api.app import open_database

    try:
        dsn, embedded = await open_database(settings)
    except EXPECTED as exc:
        raise CliError(f"cannot start the embedded PostgreSQL: {_explain(exc)}") from None
    try:
        yield dsn
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


# ---- token ---------------------------------------------------------------------------


def _token(settings: Settings, args: argparse.Namespace) -> int:
    _check(check_user_id, args.user_id, "USER_ID")
    if settings.jwt_public_key:
        raise CliError(
            "cannot sign tokens: with HUB_JWT_PUBLIC_KEY set, tokens come from your "
            "identity provider",
            2,
        )
    if settings.demo_mode:
        print(
            f"notifyhub: demo mode: signed with the secret in {settings.data_dir / 'jwt_secret'}",
            file=sys.stderr,
        )
    print(Tokens(settings).issue(args.user_id, admin=args.admin, ttl=args.ttl))
    return 0


# ---- publish -------------------------------------------------------------------------


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"user_id": args.user_id, "type": args.type}
    for name in ("title", "body", "link", "priority", "template", "idempotency_key"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.data is not None:
        try:
            fields["data"] = orjson.loads(args.data)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"--data is not valid JSON: {exc}", 2) from None
        if not isinstance(fields["data"], dict):
            raise CliError("--data must be a JSON object", 2)
    try:
        request = NotificationCreate.model_validate(fields)
    except ValidationError as exc:
        raise CliError(f"invalid notification: {_validation_message(exc)}", 2) from None
    result = asyncio.run(_create(settings, request))
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_UTC_Z) + b"\n")
    sys.stdout.flush()
    return 0


async def _create(settings: Settings, request: NotificationCreate) -> dict[str, Any]:
    from api.app import make_broker

    async with _database(settings) as dsn:
        try:
            pool = await create_pool(dsn, min_size=1, max_size=2)
        except EXPECTED as exc:
            raise CliError(f"cannot connect to the database: {_explain(exc)}") from None
        broker = make_broker(settings)
        try:
            try:
                await broker.start(_ignore_message, _nothing)
            except BrokerUnavailable as exc:
                raise CliError(str(exc)) from None
            created = await notifications.create(Services(settings, pool, broker), request)
        except asyncpg.UndefinedTableError:
            raise CliError("the database has no schema yet: run `notifyhub migrate`") from None
        except InvalidInput as exc:
            raise CliError(_invalid_input_message(exc), 2) from None
        except EXPECTED as exc:
            raise CliError(f"cannot create the notification: {_explain(exc)}") from None
        finally:
            await broker.stop()
            await pool.close()
    return {"items": created.items, "suppressed": created.suppressed}


def _ignore_message(channel: str, message: bytes) -> None:
    """The CLI only publishes; it subscribes to nothing."""


async def _nothing() -> None:
    return None


# ---- helpers -------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with its password (in the user info or a ``password=`` query) as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.IGNORECASE)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _explain(exc: BaseException) -> str:
    log.debug("details", exc_info=exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check(validator: Callable[[str], Any], value: str, name: str) -> None:
    try:
        validator(value)
    except ValueError as exc:
        raise CliError(f"invalid {name} {value!r}: {exc}", 2) from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in error["loc"])
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _invalid_input_message(exc: InvalidInput) -> str:
    extra = [
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
        for e in exc.errors
        if str(e["msg"]) not in exc.detail
    ]
    return exc.detail + (f" ({'; '.join(extra)})" if extra else "")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0-65535")
    return value


#: The longest a token from ``notifyhub token`` may live: one year.
MAX_TTL_SECONDS = 366 * 24 * 3600


def _ttl(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} (a year)"
        )
    return int(text)


def _version() -> str:
    try:
        return version("notifyhub")
    except PackageNotFoundError:
        return "(not installed)"


def _fail(message: str, code: int) -> int:
    print(f"notifyhub: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
