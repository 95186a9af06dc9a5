"""Applies the numbered ``db/migrations/NNNN_name.sql`` files, once each, in order.

An advisory lock serialises instances that start together; each file runs in its own
transaction together with its row in ``schema_migrations``.
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
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, path in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
            applied.append(f"{version:04d}_{name}")
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
