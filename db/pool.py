"""The asyncpg connection pool, with jsonb decoded and encoded by orjson, and timeouts.

A database that accepts connections but never answers (a hung server, a black-holed
network) must not hang the hub. Every step has a bound (docs/configuration.md):

- opening a connection: ``connect_timeout`` (TCP, TLS, startup and authentication);
- waiting for a pool connection, opening one included: ``acquire_timeout``;
- each statement: ``statement_timeout``, enforced by the server (``statement_timeout``
  sent at startup: a slow statement on a healthy server is cancelled there and its
  connection stays usable) and by the client ``CLIENT_GRACE`` seconds later, for a
  server or network that does not answer at all.

A statement the client gives up on (its timeout, or the awaiting task cancelled) is
cancelled on the server; if the server does not confirm within ``CANCEL_TIMEOUT``, its
connection is closed (``_Connection``) and the pool opens a fresh one on a later
acquire, so a connection is never reused while a stalled answer may still arrive on it.

Behind a pooler in transaction mode (PgBouncer's ``pool_mode = transaction``,
``transaction_pooler=True``) consecutive transactions of one connection may run on
different server sessions, so nothing may outlive a transaction: asyncpg's cache of
named prepared statements is off (each statement is an unnamed one, parsed where it
runs), and ``statement_timeout`` is not sent at start-up (PgBouncer refuses start-up
parameters it does not track); set it on the database role instead
(docs/configuration.md, "Behind PgBouncer").
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import asyncpg
import orjson

from db.errors import translate, translating

#: A connection, as the layers above ``db`` name it (they import no driver).
Connection: TypeAlias = asyncpg.Connection
#: The pool, as the layers above ``db`` name it.
Pool: TypeAlias = asyncpg.Pool
#: Anything queries can run on: a pool, or a connection (possibly in a transaction).
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


def dumps(value: Any) -> str:
    """JSON text as stored in jsonb columns (UTC datetimes with a ``Z``)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


#: The version byte that starts jsonb's binary wire format (then the JSON text).
JSONB_VERSION = b"\x01"


def _jsonb_out(value: Any) -> bytes:
    return JSONB_VERSION + orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _jsonb_in(data: bytes) -> Any:
    return orjson.loads(memoryview(data)[1:])


async def _init(conn: asyncpg.Connection) -> None:
    # jsonb in the binary format: an array of jsonb values (a batch's event data) then
    # goes as a binary array, not as one array literal that asyncpg quotes and escapes
    # and the server parses again (about half the client CPU of a jsonb parameter).
    await conn.set_type_codec("jsonb", encoder=_jsonb_out, decoder=_jsonb_in,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (one round trip per acquire).

    asyncpg still rolls back an open transaction on release. The hub leaves no other
    session state behind: no LISTEN, no SET, no cursors, and only transaction-scoped
    advisory locks (``db.cleanup``, ``db.migrate``). That is also what lets it work
    behind a pooler in transaction mode.
    """


#: How much longer than the server's statement timeout the client waits for an answer:
#: a healthy server cancels the statement itself first, and its answer arrives in this.
CLIENT_GRACE = 0.5
#: How long a cancel request may take before its connection is closed instead.
CANCEL_TIMEOUT = 1.0
#: Defaults of the three timeouts (``HUB_DB_*_TIMEOUT_SECONDS`` in hub.settings).
CONNECT_TIMEOUT, ACQUIRE_TIMEOUT, STATEMENT_TIMEOUT = 2.0, 2.0, 3.0


class _Connection(asyncpg.Connection):
    """A connection whose cancel request gives up after ``CANCEL_TIMEOUT`` seconds.

    When the client gives up on a statement (its timeout, or the awaiting task
    cancelled), asyncpg sends a CancelRequest on a second connection and keeps this one
    until the server confirms; the release to the pool, a ROLLBACK or the next statement
    wait for that. On a stalled server or network the second connection stalls too, and
    asyncpg waits ``command_timeout`` before closing this one: here ``CANCEL_TIMEOUT``.
    A healthy server confirms in milliseconds, and the connection is reused as usual.
    """

    async def _cancel(self, waiter: Any, cancel_waiter: Any = None) -> None:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT) as deadline:
                await super()._cancel(waiter, cancel_waiter)
        except TimeoutError:
            pass
        if deadline.expired():
            # Closing completes the waiters: whatever waits for the cancel goes on,
            # and the pool opens a fresh connection in place of this one.
            self.terminate()


class _Pool(asyncpg.Pool):
    """An asyncpg pool whose ``acquire`` waits at most ``acquire_timeout`` by default
    (its own queries, ``pool.fetch`` and the like, included); the release after it, too.

    What acquiring, the ``async with`` block and the release raise leaves as its
    ``db.errors`` translation: the layers above see ``DatabaseUnavailable`` and
    ``DatabaseRejected``, never a driver exception.
    """

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Translating(
            super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)
        )


class _Translating:
    """An ``async with`` around asyncpg's acquire context that translates what it raises."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    # Plain try/except rather than ``translating()``: every statement passes here, and a
    # generator-based context manager costs a few microseconds each way.
    async def __aenter__(self) -> asyncpg.Connection:
        try:
            return await self._inner.__aenter__()
        except Exception as error:
            _raise_translated(error)
            raise

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except Exception as error:
            _raise_translated(error)
            raise
        if isinstance(exc, Exception):
            _raise_translated(exc)


def _raise_translated(exc: Exception) -> None:
    """Raise ``exc``'s ``db.errors`` translation, if it has one other than itself."""
    translated = translate(exc)
    if translated is not None and translated is not exc:
        raise translated from exc


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    acquire_timeout: float = ACQUIRE_TIMEOUT,
    statement_timeout: float = STATEMENT_TIMEOUT,
    transaction_pooler: bool = False,
) -> asyncpg.Pool:
    """Open a pool to ``dsn``; every connection uses UTC, orjson for JSON, and the
    timeouts of the module docstring (seconds), the server's own statement timeout
    excepted behind a ``transaction_pooler``."""
    server_settings = {"timezone": "UTC", "application_name": "notifyhub"}
    if not transaction_pooler:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    pool = _Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,  # asyncpg's defaults
        max_inactive_connection_lifetime=300.0,
        loop=None,
        record_class=asyncpg.Record,
        connection_class=_Connection,
        init=_init,
        reset=_keep_session,
        server_settings=server_settings,  # statement_timeout in ms
        command_timeout=statement_timeout + CLIENT_GRACE,
        timeout=connect_timeout,
        **_pooler_options(transaction_pooler),
    )
    pool.acquire_timeout = acquire_timeout
    with translating():
        await pool
    return pool


async def connect(
    dsn: str, timeout: float = CONNECT_TIMEOUT, *, transaction_pooler: bool = False
) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (for the CLI and migrations).

    Opening it waits at most ``timeout`` seconds; its statements have no client-side
    timeout (a migration may take long).
    """
    with translating():
        conn = await asyncpg.connect(
            dsn, server_settings={"timezone": "UTC"}, timeout=timeout,
            **_pooler_options(transaction_pooler),
        )
        await _init(conn)
    return conn


def _pooler_options(transaction_pooler: bool) -> dict[str, Any]:
    """asyncpg's options for a connection whose transactions may each run on another
    server session: no named prepared statements (asyncpg then also re-parses a
    statement within its implicit transaction rather than rely on an earlier Parse)."""
    return {"statement_cache_size": 0} if transaction_pooler else {}


async def server_statement_timeout(pool: asyncpg.Pool) -> str:
    """The ``statement_timeout`` the server gives the pool's sessions (``"0"``: none)."""
    return str(await pool.fetchval("SHOW statement_timeout"))


async def ping(pool: asyncpg.Pool, timeout: float) -> bool:
    """Whether ``SELECT 1`` answers within ``timeout`` seconds (pool wait included).

    Returns at ``timeout`` at the latest: a probe that did not answer is cancelled and
    finishes in the background (cancelling its statement, releasing its connection).
    """
    probe = asyncio.ensure_future(_select_one(pool))
    done, _ = await asyncio.wait({probe}, timeout=timeout)
    if not done:
        probe.cancel()
        _probes.add(probe)
        probe.add_done_callback(_forget_probe)
        return False
    return not probe.cancelled() and probe.exception() is None


#: Probes that ``ping`` stopped waiting for, kept until they finish.
_probes: set[asyncio.Future[None]] = set()


def _forget_probe(probe: asyncio.Future[None]) -> None:
    _probes.discard(probe)
    if not probe.cancelled():
        probe.exception()  # retrieved: a late failure is expected, not worth a warning


async def _select_one(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
