"""Grouping by collapse key (docs/api.md, "Grouping"): a create with a collapse key
joins the user's open (unread) group with that key. Real PostgreSQL; each "instance" is
its own Services with its own pool."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db import contacts as contact_store
from db import notifications as store
from hub import inbox, notifications, scheduled
from hub.models import NotificationCreate, Selection
from hub.services import Services
from tests.hub.test_inbox import instance


def like(user: str = "u1", actor: str | None = "Ada", **more: Any) -> NotificationCreate:
    fields: dict[str, Any] = {"collapse_key": "post:1:likes", **more}
    return NotificationCreate(user_id=user, type="like", title=f"{actor} liked your post",
                              actor=actor, **fields)


async def log(svc: Services, user: str = "u1") -> list[dict[str, Any]]:
    rows = await svc.pool.fetch(
        "SELECT seq, type, data FROM user_events WHERE user_id = $1 ORDER BY seq", user)
    return [dict(r) for r in rows]


async def test_creates_with_one_key_join_the_open_group_until_it_is_read(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        await svc.pool.execute(
            "INSERT INTO templates (key, type, title, body, grouped) VALUES ('liked', 'like',"
            " '{who} liked {post}', 'see it', '{\"title\": \"{actor} and {others} others liked"
            " {post}\", \"body\": \"{count} likes\"}')")
        first = await notifications.create(svc, NotificationCreate(
            user_id="u1", type="like", template="liked", data={"who": "Ada", "post": "P"},
            collapse_key="k", actor="Ada"))
        other = await notifications.create(svc, NotificationCreate(
            user_id="u1", type="t", title="unrelated"))
        assert not first.grouped
        [group] = first.items
        assert (group["title"], group["group_count"], group["actors"]) == (
            "Ada liked P", 1, ["Ada"])
        await inbox.mark_seen(svc, "u1", Selection(ids=[group["id"]]))
        for who in ["Bob", "Cy", "Ada", "Di", "Ed", "Flo"]:
            made = await notifications.create(svc, NotificationCreate(
                user_id="u1", type="like", template="liked", data={"who": who, "post": "P"},
                collapse_key="k", actor=who))
            assert made.grouped
            assert made.items[0]["id"] == group["id"]
        [now] = made.items
        assert now["group_count"] == 7
        assert now["actors"] == ["Flo", "Ed", "Di", "Ada", "Cy"]
        assert now["title"] == "Flo and 6 others liked P"
        assert now["body"] == "7 likes"
        assert now["seen"] is False
        assert group["position"] < other.items[0]["position"] < now["position"]
        page = await notifications.page(svc, "u1")
        assert [i["id"] for i in page["items"]] == [group["id"], other.items[0]["id"]]
        assert (page["unread_count"], page["unseen_count"]) == (2, 2)

        events = await log(svc)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        kinds = [e["type"] for e in events]
        assert kinds == ["notification.created", "notification.created", "notification.seen",
                         *["notification.updated"] * 6]
        last = events[-1]["data"]
        assert last["notification"]["id"] == group["id"]
        assert last["notification"]["group_count"] == 7
        assert (last["unread_count"], last["unseen_count"]) == (2, 2)
        # The first update made it unseen again: the count went back up.
        assert events[3]["data"]["unseen_count"] == 2

        # Read: the group closes, and the next create starts a new one.
        await notifications.mark_read(svc, "u1", [group["id"]])
        fresh = await notifications.create(svc, NotificationCreate(
            user_id="u1", type="like", template="liked", data={"who": "Gus", "post": "P"},
            collapse_key="k", actor="Gus"))
        assert not fresh.grouped
        assert fresh.items[0]["id"] != group["id"]
        assert fresh.items[0]["group_count"] == 1
        assert (await log(svc))[-1]["type"] == "notification.created"


async def test_a_batch_folds_creates_of_one_group_into_one_change(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        jobs: list[notifications.Job] = [
            like("u1", "Ada"), like("u2", "Ada"), like("u1", "Bob"), like("u1", "Ada"),
            NotificationCreate(user_id="u1", type="t", title="plain"),
        ]
        async with svc.pool.acquire() as conn, conn.transaction():
            results = await notifications.create_many_in(conn, jobs)
        made = [r for r in results if isinstance(r, notifications.Created)]
        assert len(made) == 5
        assert [m.grouped for m in made] == [False, False, True, True, False]
        u1 = made[0].items[0]
        assert made[2].items[0]["id"] == made[3].items[0]["id"] == u1["id"]
        assert made[3].items[0]["group_count"] == 3
        assert made[3].items[0]["actors"] == ["Ada", "Bob"]
        assert made[3].items[0]["title"] == "Ada liked your post (3)"
        assert made[1].items[0]["group_count"] == 1
        # One created event for the folded group, none for the creates it absorbed.
        assert sum(len(m.events) for m in made) == 3
        # Another batch joins it: one update for both of its creates.
        async with svc.pool.acquire() as conn, conn.transaction():
            again = await notifications.create_many_in(conn, [like("u1", "Cy"),
                                                              like("u1", "Di")])
        assert all(isinstance(r, notifications.Created) and r.grouped for r in again)
        events = await log(svc)
        assert [e["type"] for e in events] == ["notification.created"] * 2 + [
            "notification.updated"]
        assert events[-1]["data"]["notification"]["group_count"] == 5
        assert events[-1]["data"]["notification"]["actors"] == ["Di", "Cy", "Ada", "Bob"]


async def test_an_idempotent_replay_returns_the_group(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        await notifications.create(svc, like(actor="Ada", idempotency_key="a"))
        joined = await notifications.create(svc, like(actor="Bob", idempotency_key="b"))
        assert joined.grouped
        replay = await notifications.create(svc, like(actor="Bob", idempotency_key="b"))
        assert replay.replayed and replay.grouped
        assert replay.items[0]["id"] == joined.items[0]["id"]
        assert replay.items[0]["group_count"] == 2
        rows = await svc.pool.fetch("SELECT count(*) FROM notifications")
        assert rows[0][0] == 1


async def test_archived_and_snoozed_groups_come_back_when_joined(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        [a] = (await notifications.create(svc, like(collapse_key=None, actor="x"))).items
        [g] = (await notifications.create(svc, like(actor="Ada"))).items
        await inbox.archive(svc, "u1", Selection(ids=[g["id"]]))
        [back] = (await notifications.create(svc, like(actor="Bob"))).items
        assert back["id"] == g["id"] and not back["archived"]
        await inbox.snooze(svc, "u1", g["id"], datetime.now(UTC) + timedelta(hours=1))
        [back] = (await notifications.create(svc, like(actor="Cy"))).items
        assert back["snoozed_until"] is None and back["group_count"] == 3
        events = await log(svc)
        updates = [e["data"] for e in events if e["type"] == "notification.updated"]
        # Each came back into the inbox, unread and unseen: the counts say so.
        assert [(u["unread_count"], u["unseen_count"]) for u in updates] == [(2, 2), (2, 2)]
        assert a["id"] != g["id"]


async def test_a_snoozed_group_read_before_it_returns_as_a_plain_notification(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        [g] = (await notifications.create(svc, like(actor="Ada"))).items
        await notifications.mark_read(svc, "u1", [g["id"]])
        await inbox.snooze(svc, "u1", g["id"], datetime.now(UTC) + timedelta(hours=1))
        [n] = (await notifications.create(svc, like(actor="Bob"))).items
        await svc.pool.execute("UPDATE notifications SET snoozed_until = now() - interval '1s'"
                               " WHERE snoozed_until IS NOT NULL")
        assert await inbox.return_due(svc) == 1
        [n2] = (await notifications.create(svc, like(actor="Cy"))).items
        assert n2["id"] == n["id"] and n2["group_count"] == 2
        back = await store.get(svc.pool, g["id"])
        assert back is not None and back["collapse_key"] is None and not back["read"]


async def test_two_instances_creating_into_one_group_make_exactly_one(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        instance(database_url, tmp_path / "a") as a,
        instance(database_url, tmp_path / "b") as b,
    ):
        creates = [notifications.create(svc, like(user, f"p{n}"))
                   for n in range(20) for svc in (a, b) for user in ("u1", "u2")]
        made = await asyncio.gather(*creates)
        assert sum(not m.grouped for m in made) == 2
        for user in ("u1", "u2"):
            rows = await a.pool.fetch(
                "SELECT id, group_count FROM notifications WHERE user_id = $1", user)
            assert [r["group_count"] for r in rows] == [40]
            events = await log(a, user)
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[0]["type"] == "notification.created"
            assert {e["type"] for e in events[1:]} <= {"notification.updated"}
            # One update per batch that joined: each counts more than the one before.
            counts = [events[0]["data"]["group_count"]] + [
                e["data"]["notification"]["group_count"] for e in events[1:]]
            assert counts == sorted(set(counts)) and counts[-1] == 40


async def test_a_scheduled_create_joins_its_group_when_it_is_sent(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        [g] = (await notifications.create(svc, like(actor="Ada"))).items
        later = await notifications.create(svc, like(
            actor="Bob", send_at=datetime.now(UTC) + timedelta(hours=1)))
        assert later.scheduled is not None
        await svc.pool.execute("UPDATE scheduled_notifications SET send_at = now()")
        assert await scheduled.send_batch(svc) == 1
        got = await store.get(svc.pool, g["id"])
        assert got is not None
        assert (got["group_count"], got["actors"]) == (2, ["Bob", "Ada"])
        assert got["title"] == "Bob liked your post (2)"


async def test_a_grouped_template_without_actors_says_someone_and_data_cannot_fake_markers(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        await svc.pool.execute(
            "INSERT INTO templates (key, type, title, body, grouped) VALUES ('seen', 'seen',"
            " 'Seen {post}', '', '{\"title\": \"{actor} and {others} more saw {post}\"}')")
        for _ in range(2):
            made = await notifications.create(svc, NotificationCreate(
                user_id="u1", type="seen", template="seen", data={"post": "P\x1eC{count}"},
                collapse_key="k"))
        assert made.items[0]["title"] == "Someone and 1 more saw PC{count}"
        assert made.items[0]["actors"] == []


async def test_a_scheduled_create_joins_with_the_grouped_text_of_its_recipients_locale(
    database_url: str, tmp_path: Path
) -> None:
    async with instance(database_url, tmp_path) as svc:
        def request(who: str, **more: Any) -> NotificationCreate:
            return NotificationCreate(
                user_ids=["u1", "u2"], type="friend_request", template="friend_request",
                data={"sender_name": who}, collapse_key="friends", actor=who, **more)

        await contact_store.merge_many(svc.pool, {"u1": {"locale": "de"}})
        await notifications.create(svc, request("Ada"))
        later = await notifications.create(svc, request(
            "Bob", send_at=datetime.now(UTC) + timedelta(hours=1)))
        assert later.scheduled is not None
        # The German recipient's locale changes meanwhile: the text chosen when it was
        # scheduled is kept, as for the notification's own text.
        await contact_store.merge_many(svc.pool, {"u1": {"locale": "en"}})
        await svc.pool.execute("UPDATE scheduled_notifications SET send_at = now()")
        assert await scheduled.send_batch(svc) == 1
        page = {u: (await notifications.page(svc, u))["items"] for u in ("u1", "u2")}
        assert [(i["title"], i["group_count"]) for i in page["u1"]] == [
            ("Bob und 1 weitere haben dir Freundschaftsanfragen geschickt", 2)]
        assert [(i["title"], i["group_count"]) for i in page["u2"]] == [
            ("Bob and 1 others sent you friend requests", 2)]
