"""The hub behind PgBouncer in transaction pooling mode (``HUB_DATABASE_POOLER=transaction``),
started from Debian's package in front of the test PostgreSQL: the live core over real
sockets, with fewer server connections than the hub's pool has clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import auth, running_app
from tests.live.conftest import live_hub, notify, recv, recv_until, ws_connect
from tests.servers import PgBouncer


async def server_sessions(database_url: str) -> int:
    """How many server sessions PostgreSQL has open on ``database_url``'s database."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            urlsplit(database_url).path.lstrip("/"),
        ))
    finally:
        await conn.close()


async def test_the_live_core_works_through_pgbouncer_in_transaction_mode(
    settings_env: dict[str, Any], database_url: str, pgbouncer: PgBouncer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {
        **settings_env, "database_url": pgbouncer.url_for(database_url),
        "database_pooler": "transaction", "db_pool_min": 4,
    }
    caplog.set_level(logging.WARNING, logger="notifyhub")
    async with live_hub(**settings) as hub:
        # The test database's role sets no statement timeout; the pool cannot send one.
        assert any("has no statement_timeout" in r.message for r in caplog.records)
        assert hub.svc.pool.get_size() >= 4
        http = hub.http
        async with ws_connect(hub.ws_url("u1")) as u1, ws_connect(hub.ws_url("u2")) as u2:
            for ws in (u1, u2):
                assert (await recv(ws))["type"] == "hello"
            note = await notify(hub, "u1", "Grade posted")
            assert await recv(u1) == {"type": "notification.created", "seq": 1, "data": note}

            r = await http.post("/api/notifications/mark-read", headers=auth("u1"),
                                json={"ids": [note["id"]]})
            assert r.status_code == 200, r.text
            frame = await recv(u1)
            assert (frame["type"], frame["seq"]) == ("notifications.read", 2)
            assert frame["data"]["unread_count"] == 0

            r = await http.post("/api/messages/send", headers=auth("u1"),
                                json={"recipient_id": "u2", "body": "hi"})
            assert r.status_code == 201, r.text
            message = r.json()
            assert await recv_until(u1, "message.created") == {
                "type": "message.created", "seq": 3, "data": message
            }
            assert (await recv_until(u2, "message.created"))["data"] == message
            r = await http.get("/api/messages/conversation/u1", headers=auth("u2"))
            assert [m["id"] for m in r.json()["items"]] == [message["id"]]

        # Creates that group-commit together, then a resume with since: every missed
        # event once, in order, then live again.
        titles = [f"missed {i}" for i in range(20)]
        await asyncio.gather(*[notify(hub, "u1", title) for title in titles])
        async with ws_connect(hub.ws_url("u1", since=3)) as ws:
            hello = await recv(ws)
            assert (hello["data"]["last_seq"], hello["data"]["unread_count"]) == (23, 20)
            missed = [await recv(ws) for _ in titles]
            assert [f["seq"] for f in missed] == list(range(4, 24))
            assert sorted(f["data"]["title"] for f in missed) == sorted(titles)
            live = await notify(hub, "u1", "live")
            assert await recv(ws) == {"type": "notification.created", "seq": 24, "data": live}

        # Everything above ran on PgBouncer's two server sessions: a direct connection
        # per pool client would have opened four at least.
        assert 1 <= await server_sessions(database_url) <= pgbouncer.pool_size


async def test_the_roles_statement_timeout_reaches_the_hubs_sessions_through_pgbouncer(
    settings_env: dict[str, Any], database_url: str, pgbouncer: PgBouncer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What docs/configuration.md asks of the role; here the database's, the same effect.
    admin = await asyncpg.connect(database_url)
    try:
        name = urlsplit(database_url).path.lstrip("/")
        await admin.execute(f'ALTER DATABASE "{name}" SET statement_timeout = \'3s\'')
    finally:
        await admin.close()
    settings = {**settings_env, "database_url": pgbouncer.url_for(database_url),
                "database_pooler": "transaction"}
    with caplog.at_level(logging.WARNING, logger="notifyhub"):
        async with running_app(**settings) as app:
            pool = app.state.services.pool
            assert [await pool.fetchval("SHOW statement_timeout") for _ in range(4)] == [
                "3s"
            ] * 4
    assert not [r for r in caplog.records if "statement_timeout" in r.message]
