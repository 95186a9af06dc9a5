"""The asyncpg connection pool, with jsonb decoded and encoded by orjson."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import asyncpg
import orjson

#: Exceptions that mean the database is unreachable, not that a query was wrong.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)

#: Failures of the database itself rather than of one statement: unreachable, starting
#: up or shutting down, out of resources. A write that meets one is worth retrying
#: later, whole; any other error is the fault of what was written.
TRANSIENT: tuple[type[Exception], ...] = (
    *UNAVAILABLE,
    asyncpg.ObjectNotInPrerequisiteStateError,  # e.g. "not currently accepting connections"
    asyncpg.OperatorInterventionError,  # admin or crash shutdown, query cancelled
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
)

#: Exceptions that mean the database refused one statement's data (a constraint, a
#: value it cannot store): the fault of what was written, not of the database.
REJECTED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)

#: Anything queries can run on: a pool, or a connection (possibly in a transaction).
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


def dumps(value: Any) -> str:
    """JSON text as stored in jsonb columns (UTC datetimes with a ``Z``)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (one round trip per acquire).

    asyncpg still rolls back an open transaction on release. The hub leaves no other
    session state behind: no LISTEN, no SET, no cursors, and only transaction-scoped
    advisory locks (``db.cleanup``); migrations run on a connection of their own.
    """


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool to ``dsn``; every connection uses UTC and orjson for JSON."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init,
        reset=_keep_session,
        server_settings={"timezone": "UTC", "application_name": "notifyhub"},
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (for the CLI and migrations)."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    await _init(conn)
    return conn


async def ping(pool: asyncpg.Pool, timeout: float) -> bool:
    """Whether ``SELECT 1`` answers within ``timeout`` seconds (pool wait included)."""
    try:
        async with asyncio.timeout(timeout), pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except Exception:
        return False
    return True
