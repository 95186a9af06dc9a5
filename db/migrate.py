"""Applies the numbered ``db/migrations/NNNN_name.sql`` files, once each, in order.

Each file runs in its own transaction together with its row in ``schema_migrations``,
under a transaction-scoped advisory lock that serialises instances starting together:
one that waited finds the file applied and goes on to the next. Nothing outlives a
transaction, so migrations work on a direct connection and through a pooler in
transaction mode alike (a session lock there would be taken on one server session and
released, or not, on another). Migrations have no statement timeout (``SET LOCAL``).
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from db.errors import translating

MIGRATION_DIR = Path(__file__).parent / "migrations"
LOCK_ID = 0x6E6F7469  # "noti"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def available() -> list[tuple[int, str, Path]]:
    """The migrations shipped with this version, in order."""
    found = []
    for path in MIGRATION_DIR.iterdir():
        match = _FILE.match(path.name)
        if match:
            found.append((int(match[1]), match[2], path))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date).

    Raises ``db.errors.DatabaseUnavailable`` when the database fails meanwhile.
    """
    with translating():
        return await _migrate(conn)


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    async with conn.transaction():
        done = await _locked_versions(conn)
    applied = []
    for version, name, path in available():
        if version in done:
            continue
        async with conn.transaction():
            # Another instance may have applied it while this one waited for the lock.
            if version in await _locked_versions(conn):
                continue
            await conn.execute(path.read_text())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
        applied.append(f"{version:04d}_{name}")
    return applied


async def _locked_versions(conn: asyncpg.Connection) -> set[int]:
    """In a transaction: take the migration lock until it ends, and the versions applied.

    No statement timeout until the transaction ends, waiting for the lock included: a
    role's ``statement_timeout`` (docs/configuration.md, "Behind PgBouncer") must not
    cancel a migration, nor an instance waiting while another applies one.
    """
    await conn.execute("SET LOCAL statement_timeout = 0")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_ID)
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
