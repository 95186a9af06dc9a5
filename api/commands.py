"""The ``notifyhub`` commands other than ``serve``: ``migrate``, ``token``, ``publish``
(one job, then exit) and ``worker`` (delivery workers until SIGTERM).

Like the app's lifespan, they open the hub's backends through a ``hub.runtime.Runtime``
(the embedded PostgreSQL when no ``HUB_DATABASE_URL`` is set, the broker ``HUB_REDIS_URL``
picks), taking only the steps they need, and report every failure as a ``CliError``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

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
from db.errors import SchemaMissing
from hub import notifications
from hub.errors import InvalidInput
from hub.models import NotificationCreate, check_user_id
from hub.settings import Settings
from hub.tokens import Tokens
from pubsub.errors import BrokerUnavailable

if TYPE_CHECKING:
    from hub.runtime import Runtime


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub migrate``: apply pending migrations, print each one applied."""
    applied = asyncio.run(_apply_migrations(settings))
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("database is up to date")
    return 0


async def _apply_migrations(settings: Settings) -> list[str]:
    from hub.runtime import Runtime

    async with Runtime(settings, live=False) as runtime:
        await _open_database(runtime)
        try:
            return await runtime.migrate()
        except EXPECTED as exc:
            if runtime.stage == "connect":
                raise CliError(f"cannot connect to the database: {explain(exc)}") from None
            raise CliError(f"migration failed: {explain(exc)}") from None


async def _open_database(runtime: Runtime) -> None:
    try:
        await runtime.open_database()
    except EXPECTED as exc:
        raise CliError(f"cannot start the embedded PostgreSQL: {explain(exc)}") from None


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
    for name in ("title", "body", "link", "priority", "template", "idempotency_key",
                 "send_at", "expires_at"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name, kind, what in (("data", dict, "a JSON object"),
                             ("actions", list, "a JSON array")):
        text = getattr(args, name)
        if text is None:
            continue
        try:
            fields[name] = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"--{name} is not valid JSON: {exc}", 2) from None
        if not isinstance(fields[name], kind):
            raise CliError(f"--{name} must be {what}", 2)
    try:
        request = NotificationCreate.model_validate(fields)
    except ValidationError as exc:
        raise CliError(f"invalid notification: {validation_message(exc)}", 2) from None
    result = asyncio.run(_create(settings, request))
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_UTC_Z) + b"\n")
    sys.stdout.flush()
    return 0


async def _create(settings: Settings, request: NotificationCreate) -> dict[str, Any]:
    from hub.runtime import Runtime

    async with Runtime(settings, live=False) as runtime:
        await _open_database(runtime)
        try:
            services = await runtime.connect()  # publishes only: the pool and the broker
        except BrokerUnavailable as exc:
            raise CliError(str(exc)) from None
        except EXPECTED as exc:
            if runtime.stage == "pool":
                raise CliError(f"cannot connect to the database: {explain(exc)}") from None
            raise CliError(f"cannot create the notification: {explain(exc)}") from None
        try:
            created = await notifications.create(services, request)
        except SchemaMissing:
            raise CliError("the database has no schema yet: run `notifyhub migrate`") from None
        except InvalidInput as exc:
            raise CliError(invalid_input_message(exc), 2) from None
        except EXPECTED as exc:
            raise CliError(f"cannot create the notification: {explain(exc)}") from None
    if created.scheduled is not None:
        return created.scheduled
    return {"items": created.items, "suppressed": created.suppressed,
     "grouped": created.grouped}


def worker_command(settings: Settings, args: argparse.Namespace) -> int:
    """``notifyhub worker``: run delivery workers (no HTTP) until SIGTERM or SIGINT."""
    if settings.delivery_workers == 0:
        raise CliError("HUB_DELIVERY_WORKERS is 0: this worker would send nothing", 2)
    asyncio.run(_work(settings))
    return 0


async def _work(settings: Settings) -> None:
    from hub.runtime import Runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(settings, workers_only=True)
    try:
        await runtime.open_database()
        applied = await runtime.migrate()
        if applied:
            logging.getLogger("notifyhub").info("applied migrations %s", ", ".join(applied))
        await runtime.connect()
    except BrokerUnavailable as exc:
        await runtime.close()
        raise CliError(str(exc)) from None
    except EXPECTED as exc:
        await runtime.close()
        raise CliError(f"cannot start the worker ({runtime.stage}): {explain(exc)}") from None
    logging.getLogger("notifyhub").info(
        "delivery worker running: %d concurrent sends on %s",
        settings.delivery_workers, ", ".join(runtime.services.delivery_channels) or "no channel",
    )
    try:
        await stop.wait()
    finally:
        await runtime.close()  # sends in flight finish within the workers' grace
