"""Seen, archive and snooze across two real ``notifyhub serve`` instances on one
PostgreSQL and one Redis, with WebSocket and SSE clients (docs/live.md; docs/api.md,
"The inbox")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import SERVICE, auth
from tests.live.conftest import recv, sse_stream, ws_connect, ws_url
from tests.live.test_cluster import (
    Feed,
    feeds,
    greeted,
    no_tracebacks,
    notify,
    two_hubs,
    until,
)
from tests.smtp import Recorder, smtp_server

#: Notifications snoozed through each instance in the return test.
EACH = 8


def stamp(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_seen_and_archived_on_one_device_update_both_badges_on_the_other(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
    ):
        made = [await notify(http_a, "u1", f"n{i}") for i in range(3)]
        async with (
            ws_connect(ws_url(a.url, "u1")) as phone,
            sse_stream(b.url, "u1") as laptop,
        ):
            hello = await recv(phone)
            assert hello["data"] == {"user_id": "u1", "last_seq": 3, "unread_count": 3,
                                     "unseen_count": 3, "protocol": 1}
            assert (await laptop.event())["data"]["unseen_count"] == 3

            # The laptop opens its bell (through B): the phone's badge follows (on A).
            r = await http_b.post("/api/notifications/seen",
                                  json={"before_id": made[-1]["position"]}, headers=auth("u1"))
            assert r.json() == {"updated": 3, "unread_count": 3, "unseen_count": 0}
            seen = {"type": "notification.seen", "seq": 4,
                    "data": {"ids": [n["id"] for n in made], "unread_count": 3,
                             "unseen_count": 0}}
            assert await recv(phone) == seen
            assert await laptop.event() == seen

            # A new one is unseen again; archiving it on the phone lowers both counts.
            fresh = await notify(http_b, "u1", "fresh")
            assert (await recv(phone))["data"] == fresh
            assert (await laptop.event())["data"] == fresh
            r = await http_a.post("/api/notifications/archive", json={"ids": [fresh["id"]]},
                                  headers=auth("u1"))
            assert r.json() == {"updated": 1, "unread_count": 3, "unseen_count": 0}
            archived = {"type": "notification.archived", "seq": 6,
                        "data": {"ids": [fresh["id"]], "unread_count": 3, "unseen_count": 0}}
            assert await recv(phone) == archived
            assert await laptop.event() == archived

        # A device that was away resumes and replays both, with the same seqs.
        async with ws_connect(ws_url(b.url, "u1", since=3)) as tablet:
            hello = await recv(tablet)
            assert hello["data"]["unseen_count"] == 0 and hello["data"]["unread_count"] == 3
            replayed = [await recv(tablet) for _ in range(3)]
            assert [(f["seq"], f["type"]) for f in replayed] == [
                (4, "notification.seen"), (5, "notification.created"),
                (6, "notification.archived")]
            assert replayed[0] == seen and replayed[2] == archived
        no_tracebacks(a, b)


async def test_snoozed_notifications_return_once_across_two_instances_live_in_order(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    mailbox = Recorder()
    async with (
        smtp_server(mailbox) as port,
        two_hubs(tmp_path, database_url, redis_url, redis_prefix,
                 smtp_url=f"smtp://127.0.0.1:{port}", email_from="hub@example.com",
                 public_url="https://hub.example.com",
                 delivery_poll_seconds=0.2) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, "u1")) as u1_a,
        sse_stream(b.url, "u1") as u1_b,
        feeds() as running,
    ):
        await greeted(u1_a, u1_b)
        ws_feed, sse_feed = Feed.of_ws(u1_a), Feed.of_sse(u1_b)
        running += [ws_feed, sse_feed]
        r = await http_b.put("/api/users/u1/contact", json={"email": "u1@example.com"},
                             headers=SERVICE)
        assert r.status_code == 200, r.text
        made = [await notify(http_a, "u1", f"n{i}") for i in range(2 * EACH + 1)]
        await until(lambda: sent_emails(database_url, len(made)), timeout=30)
        snoozed = made[:-1]
        # Snoozed through both instances for an hour, then again (which moves the time)
        # to be due within a second of each other: both schedulers are awake and race
        # for the same rows.
        async def snooze(seconds: Callable[[int], float]) -> None:
            for i, note in enumerate(snoozed):
                http = http_a if i % 2 else http_b
                r = await http.post(f"/api/notifications/{note['id']}/snooze",
                                    json={"until": stamp(seconds(i))}, headers=auth("u1"))
                assert r.status_code == 200, r.text

        await snooze(lambda i: 3600)
        r = await http_a.get("/api/notifications", headers=auth("u1"))
        assert [n["title"] for n in r.json()["items"]] == [made[-1]["title"]]
        assert r.json()["unread_count"] == 1
        await snooze(lambda i: 1.5 + i / len(snoozed))

        total = len(made) + 3 * len(snoozed)  # created, snoozed twice, returned
        for feed in (ws_feed, sse_feed):
            assert await feed.reach(total, timeout=30) == list(range(1, total + 1))
            returned = [f["data"] for f in feed.frames if f["type"] == "notification.unsnoozed"]
            assert Counter(d["notification"]["id"] for d in returned) == Counter(
                n["id"] for n in snoozed)
            # Each carries the counts right after it, one more each time.
            assert [d["unread_count"] for d in returned] == list(
                range(2, len(snoozed) + 2))
            assert [d["unseen_count"] for d in returned] == [d["unread_count"] for d in returned]
        await ws_feed.quiet(u1_a)  # nothing more: each returned once
        rows = await a_log(database_url)
        assert Counter(rows) == Counter({"notification.created": len(made),
                                         "notification.snoozed": 2 * len(snoozed),
                                         "notification.unsnoozed": len(snoozed)})
        # Back on top of the inbox, newest return first, each unread and unseen.
        r = await http_b.get("/api/notifications?limit=100", headers=auth("u1"))
        items = r.json()["items"]
        back = [d["notification"] for d in returned]
        assert items[:len(snoozed)] == sorted(back, key=lambda n: -n["position"])
        assert items[-1]["title"] == made[-1]["title"]
        assert r.json()["unread_count"] == r.json()["unseen_count"] == len(made)
        # Emailed when created and, each snoozed one, once more when it returned (its
        # delivery decided again in place of the first).
        await until(lambda: sent_emails(database_url, len(made)), timeout=30)
        await until(lambda: len(mailbox.messages) >= len(made) + len(snoozed), timeout=30)
        assert Counter(m.message["Subject"] for m in mailbox.messages) == Counter(
            {n["title"]: 2 for n in snoozed} | {made[-1]["title"]: 1})
        no_tracebacks(a, b)


async def sent_emails(database_url: str, count: int) -> bool:
    """Whether ``count`` email deliveries are recorded, all sent."""
    from db.pool import connect

    conn = await connect(database_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM deliveries "
                                "WHERE channel = 'email' GROUP BY state")
    finally:
        await conn.close()
    return {r["state"]: r["n"] for r in rows} == {"sent": count}


async def a_log(database_url: str) -> list[str]:
    """The types in u1's event log."""
    from db.pool import connect

    conn = await connect(database_url)
    try:
        return [r["type"] for r in await conn.fetch(
            "SELECT type FROM user_events WHERE user_id = 'u1' ORDER BY seq")]
    finally:
        await conn.close()
