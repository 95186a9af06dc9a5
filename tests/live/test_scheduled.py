"""Scheduled notifications across real hub processes (docs/delivery.md, "Scheduled
notifications"): two ``notifyhub serve`` instances on one PostgreSQL and one Redis, real
WebSocket and SSE clients, Redis stream ingest, and a real SMTP server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from tests.conftest import SERVICE, auth
from tests.live.conftest import live_hub, sse_stream, ws_connect, ws_url
from tests.live.faults import count_titled
from tests.live.test_cluster import Feed, feeds, greeted, no_tracebacks, two_hubs
from tests.live.test_email_delivery import email_settings
from tests.smtp import Recorder, smtp_server
from tests.waiting import eventually

#: Scheduled notifications per instance in the cluster test.
EACH = 15


def stamp(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def schedule(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/notifications", headers=SERVICE,
                               json={"type": "t", **body})
    assert response.status_code == 202, response.text
    made = response.json()
    assert made["status"] == "scheduled"
    return dict(made)


def created_titles(feed: Feed) -> list[str]:
    return [f["data"]["title"] for f in feed.frames if f["type"] == "notification.created"]


async def test_two_instances_send_each_scheduled_notification_once_live_and_in_order(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, "u1")) as u1_a,
        ws_connect(ws_url(b.url, "u2")) as u2_b,
        sse_stream(b.url, "u1") as u1_b_sse,
        aioredis.Redis.from_url(redis_url) as redis,
        feeds() as running,
    ):
        await greeted(u1_a, u2_b, u1_b_sse)
        u1_ws, u2_ws, u1_sse = Feed.of_ws(u1_a), Feed.of_ws(u2_b), Feed.of_sse(u1_b_sse)
        running += [u1_ws, u2_ws, u1_sse]

        # Through both instances, due within a second of each other, so both schedulers
        # are awake and race for the same rows; every other one also for u2.
        waiting = []
        for i in range(EACH):
            for name, http in (("a", http_a), ("b", http_b)):
                users = ["u1", "u2"] if i % 2 else ["u1"]
                waiting.append(await schedule(http, user_ids=users, title=f"s-{name}{i}",
                                              send_at=stamp(3 + i / EACH)))
        # And through the Redis stream, read by whichever instance.
        for i in range(3):
            payload = orjson.dumps({"user_id": "u1", "type": "t", "title": f"s-ingest{i}",
                                    "send_at": stamp(3.5)})
            await redis.xadd(f"{redis_prefix}ingest", {"payload": payload})
        # Created at once meanwhile: the scheduled ones come after it in u1's log.
        response = await http_a.post("/api/notifications", headers=SERVICE,
                                     json={"user_id": "u1", "type": "t", "title": "now"})
        assert response.status_code == 201
        assert created_titles(u1_ws) in ([], ["now"])  # nothing scheduled came early

        u1_expected = {w["title"] for w in waiting} | {f"s-ingest{i}" for i in range(3)}
        u2_expected = {w["title"] for w in waiting if "u2" in w["user_ids"]}
        total = len(u1_expected) + 1
        for feed in (u1_ws, u1_sse):
            assert await feed.reach(total, timeout=30) == list(range(1, total + 1))
            assert created_titles(feed)[0] == "now"
            assert sorted(created_titles(feed)[1:]) == sorted(u1_expected)
        assert await u2_ws.reach(len(u2_expected), timeout=30) == list(
            range(1, len(u2_expected) + 1))
        assert sorted(created_titles(u2_ws)) == sorted(u2_expected)
        # Nothing more: each arrived once. The stores agree with the feeds.
        await u1_ws.quiet(u1_a)
        assert await count_titled(database_url, "u1", "s-") == len(u1_expected)
        assert await count_titled(database_url, "u2", "s-") == len(u2_expected)
        response = await http_b.get("/api/notifications?limit=100", headers=auth("u1"))
        listed = [i["title"] for i in response.json()["items"]]
        assert sorted(listed) == sorted(u1_expected | {"now"})
        assert response.json()["unread_count"] == total
        response = await http_a.get("/api/notifications/scheduled", headers=SERVICE)
        assert response.json()["items"] == []
        no_tracebacks(a, b)


async def test_a_notification_cancelled_on_one_instance_is_never_sent_by_either(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(b.url, "u1")) as u1_b,
        feeds() as running,
    ):
        await greeted(u1_b)
        feed = Feed.of_ws(u1_b)
        running.append(feed)
        cancelled = await schedule(http_a, user_id="u1", title="cancelled",
                                   send_at=stamp(3))
        await schedule(http_a, user_id="u1", title="kept", send_at=stamp(3.5))
        response = await http_b.delete(f"/api/notifications/{cancelled['id']}",
                                       headers=SERVICE)
        assert response.status_code == 204
        response = await http_a.get(f"/api/notifications/{cancelled['id']}", headers=SERVICE)
        assert response.status_code == 404
        assert await feed.reach(1, timeout=30) == [1]
        await feed.quiet(u1_b)
        assert created_titles(feed) == ["kept"]
        no_tracebacks(a, b)


async def test_a_scheduled_email_goes_out_at_send_at_and_not_before(
    settings_env: dict[str, Any],
) -> None:
    recorder = Recorder()
    async with smtp_server(recorder) as port, live_hub(**email_settings(settings_env, port)) \
            as hub:
        made = await schedule(hub.http, user_id="ann", type="grade_posted",
                              title="Grade posted", body="Your grade for Essay 2 is A-",
                              contact={"email": "ann@school.example"}, send_at=stamp(3))
        # While it waits, nothing is sent: every check sees it waiting without an email,
        # or sent (its row gone) with or without the email yet.
        waited = 0
        while True:
            got_mail = bool(recorder.messages)
            response = await hub.http.get(f"/api/notifications/{made['id']}",
                                          headers=SERVICE)
            if response.status_code == 404:
                break
            assert response.json()["status"] == "scheduled"
            assert not got_mail, "an email went out before send_at"
            waited += 1
            await asyncio.sleep(0.05)
        assert waited > 0
        await asyncio.wait_for(recorder.arrived.wait(), 20)
        [got] = recorder.messages
        assert got.rcpt_tos == ["ann@school.example"]
        assert got.message["Subject"] == "Grade posted"
        response = await hub.http.get("/api/notifications", headers=auth("ann"))
        [item] = response.json()["items"]
        send_at = datetime.fromisoformat(made["send_at"])
        assert datetime.fromisoformat(item["created_at"]) >= send_at
        state = await eventually(lambda: email_sent(hub.http, item["id"]), timeout=20)
        assert datetime.fromisoformat(state["sent_at"]) >= send_at


async def email_sent(http: httpx.AsyncClient, notification_id: int) -> dict[str, Any] | None:
    response = await http.get(f"/api/notifications/{notification_id}/deliveries",
                              headers=SERVICE)
    assert response.status_code == 200, response.text
    return next((dict(i) for i in response.json()["items"] if i["state"] == "sent"), None)
