"""The caller's inbox and creating notifications over REST (docs/api.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import SERVICE, auth


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("type", "grade_posted")
    if "template" not in body:
        body.setdefault("title", "Grade posted")
    return await client.post("/api/notifications", json=body, headers=SERVICE)


async def test_created_notification_has_every_contract_field(client):
    r = await create(client, user_id="u1", body="Your grade is A-", link="/grades/5",
                     data={"course": "Bio"}, priority="high")
    assert r.status_code == 201
    assert r.json()["suppressed"] == []
    [item] = r.json()["items"]
    assert set(item) == {"id", "user_id", "type", "title", "body", "link", "data", "priority",
                         "read", "read_at", "seen", "seen_at", "archived", "archived_at",
                         "snoozed_until", "position", "created_at", "expires_at", "actions",
                         "action", "collapse_key", "group_count", "actors"}
    assert item["user_id"] == "u1" and item["priority"] == "high"
    assert item["actions"] == [] and item["action"] is None
    assert item["read"] is False and item["read_at"] is None
    assert item["seen"] is False and item["archived"] is False
    assert item["snoozed_until"] is None and item["position"] == item["id"]
    assert item["data"] == {"course": "Bio"}
    assert item["created_at"].endswith("Z")


async def test_template_is_rendered_from_data(client):
    r = await create(client, user_id="u1", template="grade_posted",
                     data={"assignment": "Essay 2", "grade": "A-", "grade_id": 5})
    [item] = r.json()["items"]
    assert item["title"] == "Grade posted"
    assert item["body"] == "Your grade for Essay 2 is A-"
    assert item["link"] == "/grades/5"


async def test_template_values_are_inserted_as_text(client):
    r = await create(client, user_id="u1", template="grade_posted",
                     data={"assignment": "<b>{grade}</b>", "grade": "A", "grade_id": 1})
    assert r.json()["items"][0]["body"] == "Your grade for <b>{grade}</b> is A"


async def test_template_with_missing_variable_is_422(client):
    r = await create(client, user_id="u1", template="grade_posted", data={"grade": "A"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "assignment" in r.json()["detail"]


async def test_unknown_template_is_422(client):
    r = await create(client, user_id="u1", template="nope")
    assert r.status_code == 422


async def test_create_for_many_users_returns_one_item_each(client):
    users = [f"user{i}" for i in range(25)]
    r = await create(client, user_ids=users)
    assert r.status_code == 201
    assert [n["user_id"] for n in r.json()["items"]] == users


async def test_create_needs_title_or_template_and_a_user(client):
    r = await client.post("/api/notifications", json={"user_id": "u1", "type": "x"},
                          headers=SERVICE)
    assert r.status_code == 422
    assert r.json()["errors"]
    r = await client.post("/api/notifications", json={"type": "x", "title": "t"},
                          headers=SERVICE)
    assert r.status_code == 422


async def test_user_id_and_user_ids_together_are_422_not_merged(client):
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "u0", "user_ids": [f"u{i}" for i in range(1, 1001)], "type": "x",
        "title": "t"})
    assert r.status_code == 422
    assert "not both" in str(r.json()["errors"])


async def test_stream_idempotency_keys_are_reserved_for_ingest(client):
    r = await create(client, user_id="u1", idempotency_key="stream:1732395600000-0")
    assert r.status_code == 422
    assert "reserved" in str(r.json()["errors"])
    r = await create(client, user_id="u1", idempotency_key="streams-are-fine")
    assert r.status_code == 201


async def test_only_http_and_relative_links_are_stored(client):
    for link in ("javascript:alert(1)", " JavaScript:alert(1)", "vbscript:msgbox(1)",
                 "data:text/html,<script>alert(1)</script>", "file:///etc/passwd"):
        r = await create(client, user_id="u1", link=link)
        assert r.status_code == 422, link
        assert "link" in str(r.json()["errors"])
    for link in ("https://example.com/a?b=c:d", "http://x.test", "/inbox/1", "inbox?x=a:b",
                 "#top", "//cdn.example.com/x"):
        r = await create(client, user_id="u1", link=link)
        assert r.status_code == 201, (link, r.text)


async def test_limits_are_enforced(client):
    too_long = {
        "title": "t" * 201,
        "body": "b" * 2001,
        "link": "l" * 2001,
        "data": {"k": "v" * (16 * 1024)},
        "priority": "urgent",
        "user_ids": [f"u{i}" for i in range(1001)],
    }
    for field, value in too_long.items():
        body = {"user_id": "u1", "type": "t", "title": "ok", field: value}
        r = await client.post("/api/notifications", json=body, headers=SERVICE)
        assert r.status_code == 422, field
        assert any(field in e["loc"] for e in r.json()["errors"]), field


async def test_invalid_user_id_is_422(client):
    for bad in ["", "a" * 256, "line\nbreak", "\x1b[31m"]:
        r = await create(client, user_id=bad)
        assert r.status_code == 422, bad


async def test_users_cannot_create_notifications_but_admins_can(client):
    body = {"user_id": "u2", "type": "t", "title": "hi"}
    r = await client.post("/api/notifications", json=body, headers=auth("u1"))
    assert r.status_code == 403
    r = await client.post("/api/notifications", json=body, headers=auth("root", admin=True))
    assert r.status_code == 201


async def test_idempotency_key_repeat_returns_200_with_same_items(client):
    first = await create(client, user_ids=["u1", "u2"], idempotency_key="k-1")
    again = await create(client, user_ids=["u1", "u2"], idempotency_key="k-1")
    assert first.status_code == 201 and again.status_code == 200
    assert [n["id"] for n in again.json()["items"]] == [n["id"] for n in first.json()["items"]]
    r = await client.get("/api/notifications", headers=auth("u1"))
    assert len(r.json()["items"]) == 1


async def test_concurrent_identical_creates_with_one_key_make_one_notification(client):
    results = await asyncio.gather(
        *[create(client, user_id="u1", idempotency_key="same") for _ in range(5)]
    )
    assert sorted(r.status_code for r in results) == [200, 200, 200, 200, 201]
    assert len({r.json()["items"][0]["id"] for r in results}) == 1
    r = await client.get("/api/notifications", headers=auth("u1"))
    assert len(r.json()["items"]) == 1


async def test_list_is_newest_first_with_cursor_paging(client):
    for i in range(5):
        await create(client, user_id="u1", title=f"n{i}")
    r = await client.get("/api/notifications?limit=2", headers=auth("u1"))
    page = r.json()
    assert [n["title"] for n in page["items"]] == ["n4", "n3"]
    assert page["unread_count"] == 5
    seen = [n["title"] for n in page["items"]]
    while page["next_before"] is not None:
        r = await client.get(f"/api/notifications?limit=2&before={page['next_before']}",
                             headers=auth("u1"))
        page = r.json()
        seen += [n["title"] for n in page["items"]]
    assert seen == ["n4", "n3", "n2", "n1", "n0"]


async def test_limit_outside_1_to_100_is_422(client):
    for bad in ["0", "101", "x"]:
        r = await client.get(f"/api/notifications?limit={bad}", headers=auth("u1"))
        assert r.status_code == 422, bad


async def test_filters_unread_only_and_type(client):
    a = (await create(client, user_id="u1", type="a", title="A")).json()["items"][0]
    await create(client, user_id="u1", type="b", title="B")
    await client.post("/api/notifications/mark-read", json={"ids": [a["id"]]}, headers=auth("u1"))
    r = await client.get("/api/notifications?unread_only=true", headers=auth("u1"))
    assert [n["title"] for n in r.json()["items"]] == ["B"]
    r = await client.get("/api/notifications?type=a", headers=auth("u1"))
    assert [n["title"] for n in r.json()["items"]] == ["A"]


async def test_search_is_case_insensitive_plain_text(client):
    await create(client, user_id="u1", title="Grade POSTED", body="x")
    await create(client, user_id="u1", title="100% done", body="y")
    await create(client, user_id="u1", title="1000 done", body="snake_case here")
    await create(client, user_id="u1", title="other", body="snakeXcase")

    async def titles(q: str) -> list[str]:
        r = await client.get("/api/notifications", params={"q": q}, headers=auth("u1"))
        return sorted(n["title"] for n in r.json()["items"])

    assert await titles("grade posted") == ["Grade POSTED"]
    assert await titles("0%") == ["100% done"]
    assert await titles("snake_case") == ["1000 done"]
    assert await titles("\\") == []


async def test_mark_read_ignores_other_users_ids(client):
    mine = (await create(client, user_id="u1")).json()["items"][0]["id"]
    theirs = (await create(client, user_id="u2")).json()["items"][0]["id"]
    r = await client.post("/api/notifications/mark-read", json={"ids": [mine, theirs, 999999]},
                          headers=auth("u1"))
    assert r.json() == {"updated": 1, "unread_count": 0, "unseen_count": 0}
    r = await client.get("/api/notifications/unread-count", headers=auth("u2"))
    assert r.json() == {"count": 1, "unseen": 1}


async def test_read_sets_read_at(client):
    nid = (await create(client, user_id="u1")).json()["items"][0]["id"]
    await client.post("/api/notifications/mark-read", json={"ids": [nid]}, headers=auth("u1"))
    [item] = (await client.get("/api/notifications", headers=auth("u1"))).json()["items"]
    assert item["read"] is True and item["read_at"].endswith("Z")


async def test_mark_all_read_honours_before_id_inclusive(client):
    ids = [(await create(client, user_id="u1")).json()["items"][0]["id"] for _ in range(3)]
    r = await client.post("/api/notifications/mark-all-read", json={"before_id": ids[1]},
                          headers=auth("u1"))
    assert r.json() == {"updated": 2, "unread_count": 1, "unseen_count": 1}
    r = await client.post("/api/notifications/mark-all-read", headers=auth("u1"))
    assert r.json() == {"updated": 1, "unread_count": 0, "unseen_count": 0}


async def test_delete_own_is_204_and_others_is_404_untouched(client):
    mine = (await create(client, user_id="u1")).json()["items"][0]["id"]
    theirs = (await create(client, user_id="u2")).json()["items"][0]["id"]
    r = await client.delete(f"/api/notifications/{mine}", headers=auth("u1"))
    assert r.status_code == 204
    r = await client.delete(f"/api/notifications/{theirs}", headers=auth("u1"))
    assert r.status_code == 404
    assert r.json()["status"] == 404
    assert (await client.get("/api/notifications/unread-count", headers=auth("u2"))).json() == {
        "count": 1, "unseen": 1
    }
    for bad in ["abc", "0", str(2**70)]:
        r = await client.delete(f"/api/notifications/{bad}", headers=auth("u1"))
        assert r.status_code == 404


async def test_changes_are_recorded_as_gapless_user_events(client, app):
    nid = (await create(client, user_id="u1")).json()["items"][0]["id"]
    await client.post("/api/notifications/mark-read", json={"ids": [nid]}, headers=auth("u1"))
    await client.delete(f"/api/notifications/{nid}", headers=auth("u1"))
    rows = await app.state.services.pool.fetch(
        "SELECT seq, type, data FROM user_events WHERE user_id = 'u1' ORDER BY seq"
    )
    assert [(r["seq"], r["type"]) for r in rows] == [
        (1, "notification.created"), (2, "notifications.read"), (3, "notification.deleted"),
    ]
    assert rows[1]["data"] == {"ids": [nid], "all": False, "unread_count": 0, "unseen_count": 0}
    assert rows[2]["data"] == {"id": nid, "unread_count": 0, "unseen_count": 0}


async def test_fifty_concurrent_creates_for_one_user_get_seq_1_to_50(client, app):
    results = await asyncio.gather(*[create(client, user_id="u1") for _ in range(50)])
    assert all(r.status_code == 201 for r in results)
    seqs = await app.state.services.pool.fetch(
        "SELECT seq FROM user_events WHERE user_id = 'u1' ORDER BY seq"
    )
    assert [r["seq"] for r in seqs] == list(range(1, 51))


async def test_ids_outside_the_id_range_are_422(client):
    for body in ({"ids": [2**63]}, {"ids": [0]}, {"ids": ["x"]}):
        r = await client.post("/api/notifications/mark-read", json=body, headers=auth("u1"))
        assert r.status_code == 422, body
    r = await client.post("/api/notifications/mark-all-read", json={"before_id": -1},
                          headers=auth("u1"))
    assert r.status_code == 422


async def test_a_create_with_a_collapse_key_joins_the_unread_group(client):
    like = {"user_id": "u1", "type": "like", "title": "Someone liked your post",
            "collapse_key": "post:7"}
    first = await create(client, **like, actor="Ada")
    assert first.status_code == 201 and first.json()["grouped"] is False
    [group] = first.json()["items"]
    assert (group["collapse_key"], group["group_count"], group["actors"]) == (
        "post:7", 1, ["Ada"])
    second = await create(client, **like, actor="Bob")
    assert second.status_code == 201 and second.json()["grouped"] is True
    [joined] = second.json()["items"]
    assert joined["id"] == group["id"] and joined["group_count"] == 2
    assert joined["title"] == "Someone liked your post (2)"
    assert joined["actors"] == ["Bob", "Ada"]
    page = (await client.get("/api/notifications", headers=auth("u1"))).json()
    assert [i["id"] for i in page["items"]] == [group["id"]]
    r = await client.post("/api/notifications/mark-read", json={"ids": [group["id"]]},
                          headers=auth("u1"))
    assert r.json()["updated"] == 1
    third = await create(client, **like, actor="Cy")
    assert third.json()["grouped"] is False and third.json()["items"][0]["id"] != group["id"]


async def test_a_collapse_key_over_200_characters_is_422_and_changes_nothing(client):
    await create(client, user_id="u1", collapse_key="k", title="one")
    for bad in ({"collapse_key": "k" * 201}, {"collapse_key": ""}, {"actor": "a" * 101},
                {"collapse_key": 7}):
        r = await create(client, user_id="u1", title="two", **bad)
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith("application/problem+json")
        assert list(bad) == [e["loc"][-1] for e in r.json()["errors"]]
    page = (await client.get("/api/notifications", headers=auth("u1"))).json()
    assert [(i["title"], i["group_count"]) for i in page["items"]] == [("one", 1)]


async def test_a_grouped_template_renders_actor_others_and_count(client):
    r = await create(client, user_id="u1", type="friend_request", template="friend_request",
                     data={"sender_name": "Ada"}, collapse_key="friends", actor="Ada")
    assert r.json()["items"][0]["title"] == "Friend request from Ada"
    for who in ("Bob", "Cy"):
        r = await create(client, user_id="u1", type="friend_request",
                         template="friend_request", data={"sender_name": who},
                         collapse_key="friends", actor=who)
    [item] = r.json()["items"]
    assert item["title"] == "Cy and 2 others sent you friend requests"
    assert item["body"] == "Cy wants to be your friend."
