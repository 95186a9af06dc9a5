"""Stored notifications: what an insert hands back without reading its rows, and the
insert that appends its rows' events in the same statement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from db import contacts, events, preferences, templates
from db import notifications as store
from db.errors import ClaimTaken
from db.pool import create_pool


async def test_inserted_rows_are_built_exactly_as_the_stored_rows_read_back(database_url):
    pool = await create_pool(database_url)
    later = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = {"n": 1, "f": 2.5, "deep": {"list": [1, "two", None, True]}, "s": "ü \" \\ \n"}
    actions = [{"id": "ok", "label": "OK"}, {"id": "no", "label": "No", "style": "danger"}]
    try:
        async with pool.acquire() as conn, conn.transaction():
            batch = await store.read_batch(conn, 3, [], [], [])
            ids, now = batch.ids, batch.now
            rows: list[store.Row] = [
                (ids[0], "u1", "t", "Title", "", None, {}, "normal", None, None),
                (ids[1], "u2", "t.x", "Ü", "body", "https://x.example/a", data, "high",
                 later, actions),
                (ids[2], "u1", "t", "T", "b", None, data, "low", None, []),
            ]
            assert now is not None
            built = [store.inserted(row, now) for row in rows]
            await store.insert_appending(conn, rows, now, [(row[1], "t", {}) for row in rows])
        stored = {item["id"]: item for item in await store.by_ids(pool, ids)}
        assert built == [stored[i] for i in ids]
        assert [list(item) for item in built] == [list(stored[i]) for i in ids]
        assert built[1]["expires_at"] == later and built[1]["expires_at"].tzinfo == UTC
        assert built[0]["created_at"] == built[1]["created_at"] == stored[ids[0]]["created_at"]
    finally:
        await pool.close()


async def test_rows_inserted_with_their_events_in_one_statement_are_stored_and_logged(
    database_url,
):
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await events.append(conn, [("u1", "earlier", {})])
        async with pool.acquire() as conn, conn.transaction():
            batch = await store.read_batch(conn, 3, [], [], [])
            ids, now = batch.ids, batch.now
            assert now is not None
            rows: list[store.Row] = [
                (ids[n], user, "t", f"T{n}", "", None, {"n": n}, "normal", None, None)
                for n, user in enumerate(["u1", "u2", "u1"])
            ]
            items = [store.inserted(row, now) for row in rows]
            appended = await store.insert_appending(
                conn, rows, now, [(item["user_id"], "notification.created", item) for item in items]
            )
        assert [(user, seq) for user, seq, _, _ in appended] == [("u1", 2), ("u2", 1), ("u1", 3)]
        stored = {item["id"]: item for item in await store.by_ids(pool, ids)}
        assert [stored[i] for i in ids] == items
        logged = await events.since(pool, "u1", 1, 10)
        assert [(r["seq"], r["data"]["id"]) for r in logged] == [(2, ids[0]), (3, ids[2])]
        assert logged[0]["data"]["created_at"] == now.isoformat().replace("+00:00", "Z")
    finally:
        await pool.close()


async def test_a_batch_reads_its_ids_time_preferences_templates_and_locales_at_once(
    database_url,
):
    pool = await create_pool(database_url)
    try:
        saved = {"types": {"t": {"in_app": False}}}
        await preferences.put(pool, "u1", saved)
        await contacts.put(pool, "u1", {"locale": "fr"})
        await contacts.put(pool, "u3", {"email": "u3@example.com"})
        await templates.put(pool, "plain", "t", "Hi {name}", "", None, {})
        async with pool.acquire() as conn, conn.transaction():
            batch = await store.read_batch(conn, 2, ["u1", "u2"], ["plain", "nope"], ["u1"])
            assert batch.now == await conn.fetchval("SELECT now()")
        assert len(batch.ids) == 2 and batch.ids[0] < batch.ids[1]
        assert batch.prefs == {"u1": saved}
        assert batch.templates == {"plain": {
            "key": "plain", "type": "t", "title": "Hi {name}", "body": "", "link": None,
            "locales": {}, "grouped": None,
        }}
        assert batch.locales == {}  # no template named has variants: not read
        await templates.put(pool, "fr", "t", "Hi", "", None, {"fr": {"title": "Salut"}})
        async with pool.acquire() as conn, conn.transaction():
            batch = await store.read_batch(conn, 0, [], ["fr"], ["u1", "u2", "u3"])
        assert batch.ids == [] and batch.locales == {"u1": "fr"}
        assert batch.templates["fr"]["locales"] == {"fr": {"title": "Salut"}}
        async with pool.acquire() as conn, conn.transaction():
            assert await store.read_batch(conn, 0, [], [], []) == store.Batch(
                [], None, {}, {}, {})
    finally:
        await pool.close()


async def test_an_insert_that_claims_a_key_used_before_writes_nothing(database_url):
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await store.claim_requests(conn, [("used", [], [])])
        async with pool.acquire() as conn:  # no transaction: the statement alone
            batch = await store.read_batch(conn, 2, [], [], [])
            assert batch.now is not None
            rows: list[store.Row] = [
                (i, "u1", "t", "T", "", None, {}, "normal", None, None) for i in batch.ids]
            changes = [("u1", "notification.created", {"id": i}) for i in batch.ids]
            with pytest.raises(ClaimTaken):
                await store.insert_appending(conn, rows, batch.now, changes,
                                             claims=[("new", [batch.ids[0]], []),
                                                     ("used", [batch.ids[1]], [])])
            assert await conn.fetchval("SELECT count(*) FROM notifications") == 0
            assert await conn.fetchval("SELECT count(*) FROM user_events") == 0
            assert await store.get_requests(conn, ["new", "used"]) == {"used": ([], [])}
            appended = await store.insert_appending(
                conn, rows[:1], batch.now, changes[:1], claims=[("new", [batch.ids[0]], [])])
        assert [(user, seq) for user, seq, _, _ in appended] == [("u1", 1)]
        assert await store.get_requests(pool, ["new"]) == {"new": ([batch.ids[0]], [])}
    finally:
        await pool.close()


async def test_a_claim_of_a_key_another_transaction_holds_waits_then_writes_nothing(
    database_url,
):
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as holder, pool.acquire() as conn:
            batch = await store.read_batch(conn, 1, [], [], [])
            assert batch.now is not None
            row: store.Row = (batch.ids[0], "u2", "t", "T", "", None, {}, "normal", None, None)
            async with holder.transaction():
                await store.claim_requests(holder, [("both", [], [])])
                alone = asyncio.create_task(store.insert_appending(
                    conn, [row], batch.now, [("u2", "notification.created", {})],
                    claims=[("both", [batch.ids[0]], [])]))
                await asyncio.sleep(0.2)
                assert not alone.done()  # it waits for the holder's transaction
            with pytest.raises(ClaimTaken):
                await asyncio.wait_for(alone, 10)
            assert await conn.fetchval("SELECT count(*) FROM notifications") == 0
    finally:
        await pool.close()
