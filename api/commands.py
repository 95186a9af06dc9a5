"""The ``notifyhub`` commands that do one job and exit: ``migrate``, ``token``, ``publish``.

Like the app factory, they open the hub's backends themselves (the embedded PostgreSQL
when no ``HUB_DATABASE_URL`` is set, the broker ``HUB_REDIS_URL`` picks), and report
every failure as a ``CliError``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from api.failures import (
    EXPECTED,
    CliError,
    check,
    explain,
    invalid_input_message,
    validation_message,
)
from db.migrate import migrate
from db.pool import connect, create_pool
from hub import notifications
from hub.errors import InvalidInput
from hub.models import NotificationCreate, check_user_id
from hub.services import Services
from hub.settings import Settings
from hub.tokens import Tokens
from pubsub.errors import BrokerUnavailable


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub migrate``: apply pending migrations, print each one applied."""
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
            raise CliError(f"cannot connect to the database: {explain(exc)}") from None
        try:
            return await migrate(conn)
        except EXPECTED as exc:
            raise CliError(f"migration failed: {explain(exc)}") from None
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    """The DSN to use; the embedded server (if any) is released on exit."""
    from api.app import open_database

    try:
        dsn, embedded = await open_database(settings)
    except EXPECTED as exc:
        raise CliError(f"cannot start the embedded PostgreSQL: {explain(exc)}") from None
    try:
        yield dsn
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub token``: print a JWT for ``args.user_id`` signed with the hub's secret."""
    check(check_user_id, args.user_id, "USER_ID")
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


def publish_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub publish``: create a notification as the REST API does; print the result."""
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
        raise CliError(f"invalid notification: {validation_message(exc)}", 2) from None
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
            raise CliError(f"cannot connect to the database: {explain(exc)}") from None
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
            raise CliError(invalid_input_message(exc), 2) from None
        except EXPECTED as exc:
            raise CliError(f"cannot create the notification: {explain(exc)}") from None
        finally:
            await broker.stop()
            await pool.close()
    return {"items": created.items, "suppressed": created.suppressed}


def _ignore_message(channel: str, seq: int | None, message: bytes) -> None:
    """The CLI only publishes; it subscribes to nothing."""


async def _nothing() -> None:
    return None
