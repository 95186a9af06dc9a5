"""The ``notifyhub`` command line: ``serve``, ``worker``, ``migrate``, ``token``, ``publish``.

This module parses the arguments, sets up logging (uvicorn's records in the same format,
secrets in URLs redacted) and runs the chosen command: ``serve`` is in ``api.server``, the
others in ``api.commands``. Like the app factory, the commands are composition roots that
build the app or open its backends themselves (lazily, inside the command). How every
command fails is ``api.failures``: one line on stderr, ``notifyhub: <message>``, never a
traceback for a bad value or an unreachable service. Exit codes: 0 success, 1 a runtime
failure (database, Redis or the port unavailable), 2 bad usage, configuration or input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from api.commands import migrate_command, publish_command, token_command, worker_command
from api.failures import CliError, fail
from api.redact import redact_record
from api.server import serve_command
from hub.settings import Settings, SettingsError, load_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8013
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: The longest a token from ``notifyhub token`` may live: one year.
MAX_TTL_SECONDS = 366 * 24 * 3600


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(
        args.log_level or ("info" if args.command in ("serve", "worker") else "warning")
    )
    try:
        settings = load_settings()
        command: Callable[[Settings, argparse.Namespace], int] = args.run
        return command(settings, args)
    except SettingsError as exc:
        return fail(str(exc), 2)
    except CliError as exc:
        return fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return 130


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_rename_uvicorn)
        handler.addFilter(redact_record)
    # pgserver logs every pg_ctl call with its full output at INFO.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, logging.getLogger().level))
    # pgserver asks platformdirs for a runtime dir; root has no XDG_RUNTIME_DIR.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


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
        help="log verbosity on stderr (default: info for serve and worker, warning otherwise)",
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
    serve.set_defaults(run=serve_command)

    worker = commands.add_parser(
        "worker", parents=[common],
        help="run delivery workers only (no HTTP) until SIGTERM, beside serve",
    )
    worker.set_defaults(run=worker_command)

    migrate = commands.add_parser(
        "migrate", parents=[common], help="apply pending migrations and exit"
    )
    migrate.set_defaults(run=migrate_command)

    token = commands.add_parser(
        "token", parents=[common], help="print a JWT for a user (HS256 deployments)"
    )
    token.add_argument("user_id", metavar="USER_ID")
    token.add_argument("--admin", action="store_true", help='add the "admin" role')
    token.add_argument(
        "--ttl", type=_ttl, default=3600, help="seconds until it expires (default 3600)"
    )
    token.set_defaults(run=token_command)

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
    publish.add_argument("--send-at", help="send it then (RFC 3339 with a time zone), not now")
    publish.add_argument("--expires-at", help="it expires then (RFC 3339 with a time zone)")
    publish.add_argument("--actions", help='a JSON array of 1-3 action buttons, e.g. '
                         '\'[{"id":"accept","label":"Accept","style":"primary"}]\'')
    publish.set_defaults(run=publish_command)
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0-65535")
    return value


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


if __name__ == "__main__":
    sys.exit(main())
