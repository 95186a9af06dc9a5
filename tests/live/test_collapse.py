"""Grouping by collapse key across two real ``notifyhub serve`` instances on one
PostgreSQL and one Redis, with WebSocket and SSE clients (docs/api.md, "Grouping";
docs/live.md, ``notification.updated``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SERVICE, auth
from tests.live.conftest import sse_stream, ws_connect, ws_url
from tests.live.test_cluster import Feed, feeds, greeted, no_tracebacks, two_hubs
from tests.live.test_inbox import a_log

#: Creates made through each instance at once.
EACH = 15


async def test_two_instances_creating_into_one_group_make_one_group_live_on_both(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, "u1")) as u1_a,
        sse_stream(b.url, "u1") as u1_b,
        feeds() as running,
    ):
        await greeted(u1_a, u1_b)
        ws_feed, sse_feed = Feed.of_ws(u1_a), Feed.of_sse(u1_b)
        running += [ws_feed, sse_feed]

        async def like(http: httpx.AsyncClient, n: int) -> dict[str, Any]:
            r = await http.post("/api/notifications", headers=SERVICE, json={
                "user_id": "u1", "type": "like", "title": "Your post was liked",
                "collapse_key": "post:1", "actor": f"p{n}"})
            assert r.status_code == 201, r.text
            return r.json()  # type: ignore[no-any-return]

        made = await asyncio.gather(*(like(http, n) for n in range(EACH)
                                      for http in (http_a, http_b)))
        assert sum(not m["grouped"] for m in made) == 1
        [group_id] = {m["items"][0]["id"] for m in made}

        log = await a_log(database_url)
        assert log[0] == "notification.created"
        assert set(log[1:]) <= {"notification.updated"}
        for feed in (ws_feed, sse_feed):
            assert await feed.reach(len(log), timeout=30) == list(range(1, len(log) + 1))
            first, *updates = feed.frames
            assert first["type"] == "notification.created"
            assert first["data"]["id"] == group_id
            counts = [first["data"]["group_count"]] + [
                u["data"]["notification"]["group_count"] for u in updates]
            # One update per committed batch that joined, each counting more.
            assert counts == sorted(set(counts)) and counts[-1] == 2 * EACH
            assert all(u["data"]["notification"]["id"] == group_id for u in updates)
            assert all((u["data"]["unread_count"], u["data"]["unseen_count"]) == (1, 1)
                       for u in updates)
        await ws_feed.quiet(u1_a)

        r = await http_b.get("/api/notifications", headers=auth("u1"))
        [item] = r.json()["items"]
        assert item["id"] == group_id and item["group_count"] == 2 * EACH
        assert len(item["actors"]) == 5
        assert item["title"] == f"Your post was liked ({2 * EACH})"
        assert r.json()["unread_count"] == 1
        no_tracebacks(a, b)
