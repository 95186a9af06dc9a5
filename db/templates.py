"""Stored notification templates."""

from __future__ import annotations

from typing import Any

from db.pool import Conn
from db.queries import load

Q = load("templates")


async def list_all(conn: Conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q.list_all)]


async def get(conn: Conn, key: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(Q.get, key)
    return dict(row) if row else None


async def put(
    conn: Conn, key: str, type_: str, title: str, body: str, link: str | None,
    locales: dict[str, dict[str, Any]], grouped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create or replace template ``key``; ``locales``: its variants by language tag;
    ``grouped``: its text for a group (``{"title", "body"}``), if any."""
    row = await conn.fetchrow(Q.put, key, type_, title, body, link, locales, grouped)
    assert row is not None
    return dict(row)
