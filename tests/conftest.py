"""Session servers (PostgreSQL, Redis) and per-test databases, apps and clients."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from db.migrate import migrate
from db.pool import connect
from tests.servers import PostgresServer, RedisServer, external

#: One per test process (pytest-xdist), since they may share one external server.
TEMPLATE_DB = "hub_template_" + os.environ.get("PYTEST_XDIST_WORKER", "main")


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the test PostgreSQL server."""
    url = external("HUB_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> str:
    """A migrated template database that per-test databases are cloned from."""

    async def build() -> None:
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        conn = await connect(with_database(pg_admin_dsn, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE_DB


@asynccontextmanager
async def scratch_database(admin_dsn: str, prefix: str, template: str | None) -> AsyncIterator[str]:
    """A new database (cloned from ``template`` when given), dropped afterwards."""
    name = prefix + uuid.uuid4().hex[:16]
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh database of this test's own, cloned from the migrated template."""
    async with scratch_database(pg_admin_dsn, "t_", pg_template) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    async with scratch_database(pg_admin_dsn, "e_", None) as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """The session's own Redis (None when HUB_TEST_REDIS_URL points elsewhere)."""
    if external("HUB_TEST_REDIS_URL"):
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may kill, freeze (SIGSTOP) and restart."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    if redis_server is None:
        url = external("HUB_TEST_REDIS_URL")
        assert url
        return url
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key/channel prefix of this test's own, so tests share one Redis safely."""
    return f"t{uuid.uuid4().hex[:12]}:"


SECRET = "test-secret-0123456789-abcdefghijklmnop"
API_KEY = "test-api-key-0123456789"


@pytest.fixture
def settings_env(database_url: str, tmp_path: Any) -> dict[str, Any]:
    """Settings overrides for an app on this test's database (HS256, one API key)."""
    return {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "jwt_secret": SECRET,
        "api_keys": [API_KEY],
    }


@asynccontextmanager
async def running_app(**overrides: Any) -> AsyncIterator[Any]:
    """A notifyhub ASGI app with its lifespan entered."""
    from api.app import create_app
    from hub.settings import Settings

    app = create_app(Settings(**overrides))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app(settings_env: dict[str, Any]) -> AsyncIterator[Any]:
    async with running_app(**settings_env) as app:
        yield app


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client bound to the app in-process (REST tests; live tests use sockets)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def make_token(user_id: str, admin: bool = False, ttl: int = 3600, **claims: Any) -> str:
    from hub.settings import Settings
    from hub.tokens import Tokens

    return Tokens(Settings(jwt_secret=SECRET)).issue(user_id, admin=admin, ttl=ttl, **claims)


def auth(user_id: str, admin: bool = False) -> dict[str, str]:
    """Headers authenticating as ``user_id``."""
    return {"Authorization": f"Bearer {make_token(user_id, admin=admin)}"}


SERVICE = {"X-API-Key": API_KEY}
