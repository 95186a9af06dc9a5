"""Numbered migrations: applied once, in order, safely by instances starting together."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg

from db.migrate import LOCK_ID, available, migrate
from db.pool import connect
from tests.conftest import pgbouncer_in_front


async def test_first_run_applies_everything_and_second_is_a_no_op(empty_database_url):
    conn = await connect(empty_database_url)
    try:
        first = await migrate(conn)
        assert first == [f"{v:04d}_{n}" for v, n, _ in available()]
        assert await migrate(conn) == []
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(available())
    finally:
        await conn.close()


async def test_instances_migrating_together_apply_each_file_once(empty_database_url):
    conns = [await connect(empty_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*[migrate(c) for c in conns])
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(f"{v:04d}_{n}" for v, n, _ in available())
    finally:
        for c in conns:
            await c.close()


async def test_instances_migrating_together_through_pgbouncer_apply_each_file_once(
    pg_admin_dsn, empty_database_url
):
    # One server connection for three migrators: consecutive transactions of each run on
    # the same server session, so a session-level lock would be everyone's at once.
    with pgbouncer_in_front(pg_admin_dsn, pool_size=1) as bouncer:
        url = bouncer.url_for(empty_database_url)
        conns = [await connect(url, transaction_pooler=True) for _ in range(3)]
        try:
            results = await asyncio.gather(*[migrate(c) for c in conns])
            assert await migrate(conns[0]) == []
        finally:
            for c in conns:
                await c.close()
    applied = [name for result in results for name in result]
    assert sorted(applied) == [f"{v:04d}_{n}" for v, n, _ in available()]
    direct = await asyncpg.connect(empty_database_url)
    try:
        assert await direct.fetchval("SELECT count(*) FROM schema_migrations") == len(available())
        # Nothing of the migration lock outlived the migrations on the server's sessions.
        assert await direct.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            LOCK_ID,
        ) == 0
    finally:
        await direct.close()


async def test_a_migration_waits_for_the_lock_held_in_another_transaction_untimed(
    empty_database_url,
):
    # The statement timeout a role has behind a transaction pooler (here the database's).
    name = urlsplit(empty_database_url).path.lstrip("/")
    holder = await connect(empty_database_url)
    await holder.execute(f'ALTER DATABASE "{name}" SET statement_timeout = 200')
    conn = await connect(empty_database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", LOCK_ID)
            migrating = asyncio.ensure_future(migrate(conn))
            async with asyncio.timeout(10):
                while not await holder.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND objid = $1 AND NOT granted", LOCK_ID,
                ):
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # past the 200 ms: the wait is not a timed statement
            assert not migrating.done()
        async with asyncio.timeout(30):
            assert len(await migrating) == len(available())
    finally:
        await holder.close()
        await conn.close()


async def test_first_migration_seeds_the_nine_templates(empty_database_url):
    conn = await connect(empty_database_url)
    try:
        await migrate(conn)
        keys = {r["key"] for r in await conn.fetch("SELECT key FROM templates")}
    finally:
        await conn.close()
    assert keys >= {
        "assignment_created", "assignment_due_soon", "grade_posted", "friend_request",
        "group_invitation", "achievement_unlocked", "study_goal_milestone", "new_message",
        "system_announcement",
    }


def test_migration_files_are_numbered_without_gaps():
    versions = [v for v, _, _ in available()]
    assert versions == list(range(1, len(versions) + 1))


async def test_time_zones_postgresql_does_not_know_fall_back_when_migrating(database_url):
    """0014: a contact's zone PostgreSQL does not know is cleared, a quiet hours' one
    becomes UTC; known ones and prefs without quiet hours are left alone."""
    [(_, _, path)] = [m for m in available() if m[1] == "unknown_time_zones"]
    conn = await connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO contacts (user_id, time_zone) VALUES ('ann', 'Nowhere/Atlantis'),"
            " ('bob', 'Europe/Paris')")
        await conn.execute(
            "INSERT INTO preferences (user_id, prefs) VALUES"
            " ('ann', '{\"quiet_hours\": {\"start\": \"22:00\", \"end\": \"07:00\","
            " \"timezone\": \"Nowhere/Atlantis\"}}'),"
            " ('bob', '{\"quiet_hours\": {\"start\": \"22:00\", \"end\": \"07:00\","
            " \"timezone\": \"Asia/Tokyo\"}}'), ('cid', '{\"quiet_hours\": null}')")
        await conn.execute(path.read_text())
        zones = dict(await conn.fetch("SELECT user_id, time_zone FROM contacts"))
        assert zones == {"ann": None, "bob": "Europe/Paris"}
        quiet = dict(await conn.fetch(
            "SELECT user_id, prefs -> 'quiet_hours' ->> 'timezone' FROM preferences"))
        assert quiet == {"ann": "UTC", "bob": "Asia/Tokyo", "cid": None}
    finally:
        await conn.close()
