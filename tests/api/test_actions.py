"""Action buttons over REST (docs/api.md, "Action buttons"): actions on create, and
``POST /api/notifications/{id}/actions/{action_id}``. Real PostgreSQL, in-process broker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import SERVICE, auth

ACCEPT = {"id": "accept", "label": "Accept", "style": "primary"}
DECLINE = {"id": "decline", "label": "Decline", "url": "/friends/requests"}


async def create(client: httpx.AsyncClient, status: int = 201, **body: Any) -> Any:
    body.setdefault("user_id", "ann")
    body.setdefault("type", "friend_request")
    body.setdefault("title", "Friend request from Ada")
    r = await client.post("/api/notifications", json=body, headers=SERVICE)
    assert r.status_code == status, r.text
    return r.json()


async def act(client: httpx.AsyncClient, id_: int, action: str, user: str = "ann",
              **headers: str) -> httpx.Response:
    return await client.post(f"/api/notifications/{id_}/actions/{action}",
                             headers=headers or auth(user))


async def events(app: Any, user: str) -> list[tuple[int, str]]:
    rows = await app.state.services.pool.fetch(
        "SELECT seq, type FROM user_events WHERE user_id = $1 ORDER BY seq", user)
    return [(r["seq"], r["type"]) for r in rows]


async def outbox(app: Any) -> list[dict[str, Any]]:
    rows = await app.state.services.pool.fetch("SELECT * FROM action_outbox ORDER BY id")
    return [dict(r) for r in rows]


async def stored_count(app: Any) -> int:
    return int(await app.state.services.pool.fetchval("SELECT count(*) FROM notifications"))


async def test_actions_are_stored_with_their_defaults_and_shown_everywhere(client):
    [item] = (await create(client, actions=[ACCEPT, DECLINE]))["items"]
    expected = [
        {"id": "accept", "label": "Accept", "url": None, "style": "primary"},
        {"id": "decline", "label": "Decline", "url": "/friends/requests", "style": "secondary"},
    ]
    assert item["actions"] == expected and item["action"] is None
    page = (await client.get("/api/notifications", headers=auth("ann"))).json()
    assert page["items"][0]["actions"] == expected
    one = (await client.get(f"/api/notifications/{item['id']}", headers=auth("ann"))).json()
    assert one["actions"] == expected and one["action"] is None


async def test_a_bulk_create_gives_every_recipient_the_actions(client):
    made = await create(client, user_id=None, user_ids=["ann", "bob", "cy"],
                        actions=[ACCEPT])
    assert [(i["user_id"], [a["id"] for a in i["actions"]]) for i in made["items"]] == [
        ("ann", ["accept"]), ("bob", ["accept"]), ("cy", ["accept"])]


async def test_a_template_create_carries_the_actions_given(client):
    [item] = (await create(client, title=None, template="friend_request",
                           data={"sender_name": "Ada"}, actions=[ACCEPT, DECLINE]))["items"]
    assert item["title"] == "Friend request from Ada"
    assert [a["id"] for a in item["actions"]] == ["accept", "decline"]


@pytest.mark.parametrize(("actions", "loc", "msg"), [
    ([], ["actions"], "at least 1"),
    ([ACCEPT, DECLINE, {"id": "c", "label": "C"}, {"id": "d", "label": "D"}], ["actions"],
     "at most 3"),
    ([ACCEPT, {**DECLINE, "id": "accept"}], ["actions"], "action ids must be distinct"),
    ([{"id": "a b", "label": "x"}], ["actions", 0, "id"], "pattern"),
    ([{"id": "a" * 65, "label": "x"}], ["actions", 0, "id"], "pattern"),
    ([{"id": "", "label": "x"}], ["actions", 0, "id"], "pattern"),
    ([{"label": "x"}], ["actions", 0, "id"], "Field required"),
    ([{"id": "a", "label": ""}], ["actions", 0, "label"], "at least 1"),
    ([{"id": "a", "label": "   "}], ["actions", 0, "label"], "must not be blank"),
    ([{"id": "a", "label": "x" * 61}], ["actions", 0, "label"], "at most 60"),
    ([{"id": "a", "label": "x", "url": "javascript:alert(1)"}], ["actions", 0, "url"],
     "http(s) URL or a path"),
    ([{"id": "a", "label": "x", "url": "data:text/html,hi"}], ["actions", 0, "url"],
     "http(s) URL or a path"),
    ([{"id": "a", "label": "x", "style": "danger"}], ["actions", 0, "style"], "primary"),
    ([{"id": "a", "label": "x", "onclick": "y"}], ["actions", 0, "onclick"], "Extra inputs"),
    ({"id": "a", "label": "x"}, ["actions"], "list"),
])
async def test_invalid_actions_are_422_naming_the_field_and_nothing_is_stored(
    app, client, actions, loc, msg
):
    problem = await create(client, 422, actions=actions)
    assert problem["type"] == "urn:notifyhub:problem:invalid_input"
    assert any(e["loc"] == loc and msg in e["msg"] for e in problem["errors"]), problem
    assert await stored_count(app) == 0


async def test_choosing_an_action_records_it_marks_it_read_and_logs_one_update(app, client):
    [item] = (await create(client, actions=[ACCEPT, DECLINE]))["items"]
    await create(client, title="Another, unread")
    before = await events(app, "ann")
    r = await act(client, item["id"], "accept")
    assert r.status_code == 200, r.text
    chosen = r.json()
    assert chosen["id"] == item["id"] and chosen["read"] is True and chosen["read_at"]
    assert chosen["action"]["id"] == "accept" and chosen["action"]["acted_at"].endswith("Z")
    assert chosen["actions"] == item["actions"] and chosen["unread_count"] == 1
    assert await events(app, "ann") == [*before, (len(before) + 1, "notification.updated")]
    [queued] = await outbox(app)
    assert (queued["notification_id"], queued["user_id"], queued["type"],
            queued["action_id"]) == (item["id"], "ann", "friend_request", "accept")
    listed = (await client.get("/api/notifications", headers=auth("ann"))).json()
    assert listed["unread_count"] == 1
    shown = next(i for i in listed["items"] if i["id"] == item["id"])
    assert shown["action"] == chosen["action"] and shown["read"] is True


async def test_the_same_choice_again_answers_the_same_and_changes_nothing(app, client):
    [item] = (await create(client, actions=[ACCEPT, DECLINE]))["items"]
    first = (await act(client, item["id"], "decline")).json()
    logged, queued = await events(app, "ann"), await outbox(app)
    again = await act(client, item["id"], "decline")
    assert again.status_code == 200
    assert again.json() == first
    assert await events(app, "ann") == logged and await outbox(app) == queued


async def test_another_action_after_a_choice_is_409_and_changes_nothing(app, client):
    [item] = (await create(client, actions=[ACCEPT, DECLINE]))["items"]
    first = (await act(client, item["id"], "accept")).json()
    logged, queued = await events(app, "ann"), await outbox(app)
    r = await act(client, item["id"], "decline")
    assert r.status_code == 409
    assert r.json()["type"] == "urn:notifyhub:problem:conflict"
    assert "accept" in r.json()["detail"]
    assert await events(app, "ann") == logged and await outbox(app) == queued
    one = (await client.get(f"/api/notifications/{item['id']}", headers=auth("ann"))).json()
    assert one["action"] == first["action"]


@pytest.mark.parametrize("action", ["maybe", "ACCEPT", "a%20b", "x" * 65])
async def test_an_unknown_action_is_404_and_changes_nothing(app, client, action):
    [item] = (await create(client, actions=[ACCEPT]))["items"]
    logged = await events(app, "ann")
    r = await act(client, item["id"], action)
    assert r.status_code == 404
    assert r.json()["detail"] == "the notification has no such action"
    one = (await client.get(f"/api/notifications/{item['id']}", headers=auth("ann"))).json()
    assert one["read"] is False and one["action"] is None
    assert await events(app, "ann") == logged and await outbox(app) == []


async def test_a_notification_without_actions_has_none_to_choose(app, client):
    [item] = (await create(client))["items"]
    r = await act(client, item["id"], "accept")
    assert r.status_code == 404 and await outbox(app) == []


async def test_only_the_owner_may_choose(app, client):
    [item] = (await create(client, actions=[ACCEPT]))["items"]
    # Someone else's notification is not found, as everywhere in the inbox.
    assert (await act(client, item["id"], "accept", user="bob")).status_code == 404
    # An admin acts for nobody: only a user's own notifications.
    r = await client.post(f"/api/notifications/{item['id']}/actions/accept",
                          headers=auth("root", admin=True))
    assert r.status_code == 404
    # A service has no inbox.
    r = await client.post(f"/api/notifications/{item['id']}/actions/accept", headers=SERVICE)
    assert r.status_code == 403
    r = await client.post(f"/api/notifications/{item['id']}/actions/accept")
    assert r.status_code == 401
    assert (await act(client, 10**15, "accept")).status_code == 404
    assert (await act(client, "abc", "accept")).status_code == 404  # type: ignore[arg-type]
    assert await outbox(app) == []
    one = (await client.get(f"/api/notifications/{item['id']}", headers=auth("ann"))).json()
    assert one["action"] is None and one["read"] is False


async def test_an_expired_notification_cannot_be_acted_on(app, client):
    [item] = (await create(client, actions=[ACCEPT]))["items"]
    await app.state.services.pool.execute(
        "UPDATE notifications SET expires_at = now() - interval '1 second' WHERE id = $1",
        item["id"])
    assert (await act(client, item["id"], "accept")).status_code == 404
    assert await outbox(app) == []


async def test_choosing_on_a_read_notification_keeps_when_it_was_read(app, client):
    [item] = (await create(client, actions=[ACCEPT]))["items"]
    r = await client.post("/api/notifications/mark-read", json={"ids": [item["id"]]},
                          headers=auth("ann"))
    read_at = (await client.get(f"/api/notifications/{item['id']}",
                                headers=auth("ann"))).json()["read_at"]
    r = await act(client, item["id"], "accept")
    assert r.status_code == 200
    assert r.json()["read_at"] == read_at and r.json()["unread_count"] == 0


async def test_a_scheduled_create_keeps_its_actions(client):
    from datetime import UTC, datetime, timedelta

    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = await create(client, 202, actions=[ACCEPT], send_at=send_at)
    assert made["status"] == "scheduled"
    assert made["actions"] == [{"id": "accept", "label": "Accept", "url": None,
                                "style": "primary"}]
    listed = (await client.get("/api/notifications/scheduled", headers=SERVICE)).json()
    assert listed["items"][0]["actions"] == made["actions"]
