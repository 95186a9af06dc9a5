"""Stored notifications: what an insert hands back without reading its rows, and the
insert that appends its rows' events in the same statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from db import events, preferences
from db import notifications as store
from db.pool import create_pool


async def test_inserted_rows_are_built_exactly_as_the_stored_rows_read_back(database_url):
    pool = await create_pool(database_url)
    later = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = {"n": 1, "f": 2.5, "deep": {"list": [1, "two", None, True]}, "s": "ü \" \\ \n"}
    actions = [{"id": "ok", "label": "OK"}, {"id": "no", "label": "No", "style": "danger"}]
    try:
        async with pool.acquire() as conn, conn.transaction():
            ids, now, _ = await store.allocate_ids(conn, 3)
            rows: list[store.Row] = [
                (ids[0], "u1", "t", "Title", "", None, {}, "normal", None, None),
                (ids[1], "u2", "t.x", "Ü", "body", "https://x.example/a", data, "high",
                 later, actions),
                (ids[2], "u1", "t", "T", "b", None, data, "low", None, []),
            ]
            assert now is not None
            built = [store.inserted(row, now) for row in rows]
            await store.insert_appending(conn, rows, [(row[1], "t", {}) for row in rows])
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
            ids, now, _ = await store.allocate_ids(conn, 3)
            assert now is not None
            rows: list[store.Row] = [
                (ids[n], user, "t", f"T{n}", "", None, {"n": n}, "normal", None, None)
                for n, user in enumerate(["u1", "u2", "u1"])
            ]
            items = [store.inserted(row, now) for row in rows]
            appended = await store.insert_appending(
                conn, rows, [(item["user_id"], "notification.created", item) for item in items]
            )
        assert [(user, seq) for user, seq, _, _ in appended] == [("u1", 2), ("u2", 1), ("u1", 3)]
        stored = {item["id"]: item for item in await store.by_ids(pool, ids)}
        assert [stored[i] for i in ids] == items
        logged = await events.since(pool, "u1", 1, 10)
        assert [(r["seq"], r["data"]["id"]) for r in logged] == [(2, ids[0]), (3, ids[2])]
        assert logged[0]["data"]["created_at"] == now.isoformat().replace("+00:00", "Z")
    finally:
        await pool.close()


async def test_ids_come_with_the_transaction_time_and_the_saved_preferences_of_the_users(
    database_url,
):
    pool = await create_pool(database_url)
    try:
        saved = {"types": {"t": {"in_app": False}}}
        await preferences.put(pool, "u1", saved)
        async with pool.acquire() as conn, conn.transaction():
            ids, now, prefs = await store.allocate_ids(conn, 2, ["u1", "u2"])
            assert now == await conn.fetchval("SELECT now()")
        assert len(ids) == 2 and ids[0] < ids[1]
        assert prefs == {"u1": saved}
        async with pool.acquire() as conn, conn.transaction():
            assert (await store.allocate_ids(conn, 0, ["u2"]))[::2] == ([], {})
            assert await store.allocate_ids(conn, 0, []) == ([], None, {})
    finally:
        await pool.close()
