"""The database's failures in notifyhub's terms; asyncpg's exceptions stop in ``db``.

    DatabaseError
    ├── DatabaseUnavailable   unreachable, starting or stopping, timed out, out of
    │                         resources: the database's fault; retry later, whole
    ├── DatabaseRejected      it refused what one statement wrote (a constraint, a value
    │                         it cannot store): the fault of what was written
    ├── ClaimTaken            a statement that claims idempotency keys met one used
    │                         before, and wrote nothing: make it again in a transaction
    └── SchemaMissing         the notifyhub tables are not there: migrations never ran

``translate(exc)`` names a driver exception; ``translating()`` (and the pool, ``connect``
and ``migrate`` of ``db``) raise the translation ``from`` the original, so logs keep the
driver's text. Anything else the driver raises (a bug in a query) passes through as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg


class DatabaseError(Exception):
    """A failure of the database or of what was sent to it."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be used now: worth retrying later, whole."""


class DatabaseRejected(DatabaseError):
    """The database refused one statement's data: retrying the same data fails again."""


class ClaimTaken(DatabaseError):
    """A statement that claims idempotency keys (``db.notifications.insert_appending``)
    found one claimed before: it stopped, and wrote nothing."""


#: The SQLSTATE with which such a statement stops (migration 0016).
CLAIM_TAKEN = "NH001"


class SchemaMissing(DatabaseError):
    """A table notifyhub needs does not exist: the database was never migrated."""


#: Driver exceptions that mean the database cannot be used now, not that a query was wrong.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,  # connect, acquire or statement timeouts (TimeoutError on 3.11+)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,  # over the statement timeout (or cancelled by an admin)
    asyncpg.ObjectNotInPrerequisiteStateError,  # e.g. "not currently accepting connections"
    asyncpg.OperatorInterventionError,  # admin or crash shutdown, query cancelled
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
)

_REJECTED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


def translate(exc: BaseException) -> DatabaseError | None:
    """``exc`` as a ``DatabaseError``, or None when it is neither kind (a bug, a query error)."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return DatabaseUnavailable(_describe(exc))
    if isinstance(exc, _REJECTED):
        return DatabaseRejected(_describe(exc))
    if isinstance(exc, asyncpg.UndefinedTableError):
        return SchemaMissing(_describe(exc))
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == CLAIM_TAKEN:
        return ClaimTaken(_describe(exc))
    return None


@contextmanager
def translating() -> Iterator[None]:
    """Raise what the block raises as its ``translate``-ion, when it has one."""
    try:
        yield
    except BaseException as exc:
        translated = translate(exc)
        if translated is None or translated is exc:
            raise
        raise translated from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name
