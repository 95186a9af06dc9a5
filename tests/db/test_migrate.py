"""Numbered migrations: applied once, in order, safely by instances starting together."""

from __future__ import annotations

import asyncio

from db.migrate import available, migrate
from db.pool import connect


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
