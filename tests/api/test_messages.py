"""REST direct messages (docs/messages.md) and the events they leave in the logs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import SERVICE, auth

TIMEOUT = 10


async def send(client: httpx.AsyncClient, sender: str, recipient: str, body: str = "hi",
               **extra: Any) -> httpx.Response:
    payload = {"recipient_id": recipient, "body": body, **extra}
    return await asyncio.wait_for(
        client.post("/api/messages/send", json=payload, headers=auth(sender)), TIMEOUT
    )


async def sent(client: httpx.AsyncClient, sender: str, recipient: str, body: str = "hi") -> int:
    response = await send(client, sender, recipient, body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def events(app: Any, user: str) -> list[tuple[int, str, Any]]:
    """``user``'s event log, oldest first."""
    rows = await app.state.services.pool.fetch(
        "SELECT seq, type, data FROM user_events WHERE user_id = $1 ORDER BY seq", user
    )
    return [(r["seq"], r["type"], r["data"]) for r in rows]


async def typed(app: Any, user: str, type_: str) -> list[Any]:
    return [data for _, t, data in await events(app, user) if t == type_]


async def message_row(app: Any, id_: int) -> dict[str, Any] | None:
    row = await app.state.services.pool.fetchrow(
        "SELECT * FROM direct_messages WHERE id = $1", id_
    )
    return None if row is None else dict(row)


async def get(client: httpx.AsyncClient, user: str, path: str) -> Any:
    response = await asyncio.wait_for(client.get(path, headers=auth(user)), TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


async def mark(client: httpx.AsyncClient, user: str, body: dict[str, Any]) -> httpx.Response:
    return await asyncio.wait_for(
        client.post("/api/messages/mark-read", json=body, headers=auth(user)), TIMEOUT
    )


async def delete(client: httpx.AsyncClient, user: str, id_: int, query: str = "") -> int:
    response = await asyncio.wait_for(
        client.delete(f"/api/messages/{id_}{query}", headers=auth(user)), TIMEOUT
    )
    return response.status_code


ENDPOINTS = [
    ("POST", "/api/messages/send", {"recipient_id": "u2", "body": "hi"}),
    ("GET", "/api/messages/conversations", None),
    ("GET", "/api/messages/conversation/u2", None),
    ("POST", "/api/messages/mark-read", {"ids": [1]}),
    ("DELETE", "/api/messages/1", None),
]


# ---- auth ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_without_a_token_is_401(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_refuses_an_api_key_with_403(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body, headers=SERVICE)
    assert response.status_code == 403


# ---- send ----------------------------------------------------------------------------


async def test_send_returns_201_with_the_message(client: httpx.AsyncClient) -> None:
    response = await send(client, "u1", "u2", "hello there", client_id="c-1")
    assert response.status_code == 201
    message = response.json()
    assert set(message) == {"id", "sender_id", "recipient_id", "body", "client_id",
                            "created_at", "read_at"}
    assert message["sender_id"] == "u1"
    assert message["recipient_id"] == "u2"
    assert message["body"] == "hello there"
    assert message["client_id"] == "c-1"
    assert message["read_at"] is None
    assert message["created_at"].endswith("Z")


async def test_send_logs_message_created_for_both_parties(
    app: Any, client: httpx.AsyncClient
) -> None:
    message = (await send(client, "u1", "u2", "hi")).json()
    assert await events(app, "u1") == [(1, "message.created", message)]
    recipient = await events(app, "u2")
    assert recipient[0] == (1, "message.created", message)
    assert [(seq, t) for seq, t, _ in recipient] == [
        (1, "message.created"), (2, "notification.created")
    ]


async def test_sending_to_yourself_is_422(app: Any, client: httpx.AsyncClient) -> None:
    response = await send(client, "u1", "u1")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["recipient_id"]
    assert await events(app, "u1") == []


@pytest.mark.parametrize("body", ["", "   \n", "x" * 4001])
async def test_an_empty_blank_or_too_long_body_is_422(
    client: httpx.AsyncClient, body: str
) -> None:
    assert (await send(client, "u1", "u2", body)).status_code == 422


async def test_a_body_of_4000_characters_is_accepted(client: httpx.AsyncClient) -> None:
    response = await send(client, "u1", "u2", "é" * 4000)
    assert response.status_code == 201
    assert response.json()["body"] == "é" * 4000


@pytest.mark.parametrize("recipient", ["", "has\ttab", "x" * 256, "a\x85b"])
async def test_an_invalid_recipient_id_is_422(client: httpx.AsyncClient, recipient: str) -> None:
    assert (await send(client, "u1", recipient)).status_code == 422


async def test_a_nul_character_in_the_body_is_422(client: httpx.AsyncClient) -> None:
    assert (await send(client, "u1", "u2", "a\x00b")).status_code == 422


async def test_unknown_fields_are_422(client: httpx.AsyncClient) -> None:
    assert (await send(client, "u1", "u2", "hi", sender_id="u9")).status_code == 422


async def test_a_repeated_client_id_returns_the_original_with_200(
    app: Any, client: httpx.AsyncClient
) -> None:
    first = await send(client, "u1", "u2", "hi", client_id="c-1")
    again = await send(client, "u1", "u2", "hi", client_id="c-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(await events(app, "u1")) == 1
    assert len(await typed(app, "u2", "notification.created")) == 1
    page = await get(client, "u2", "/api/messages/conversation/u1")
    assert len(page["items"]) == 1


@pytest.mark.parametrize(("recipient", "body"), [("u2", "other text"), ("u3", "hi")])
async def test_reusing_a_client_id_for_a_different_message_is_409(
    app: Any, client: httpx.AsyncClient, recipient: str, body: str
) -> None:
    assert (await send(client, "u1", "u2", "hi", client_id="c-1")).status_code == 201
    response = await send(client, "u1", recipient, body, client_id="c-1")
    assert response.status_code == 409
    assert len(await events(app, "u1")) == 1


async def test_client_ids_are_per_sender(client: httpx.AsyncClient) -> None:
    a = await send(client, "u1", "u3", "hi", client_id="same")
    b = await send(client, "u2", "u3", "hi", client_id="same")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_five_concurrent_sends_with_one_client_id_store_one_message(
    app: Any, client: httpx.AsyncClient
) -> None:
    responses = await asyncio.gather(
        *(send(client, "u1", "u2", "once", client_id="c-race") for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    count = await app.state.services.pool.fetchval("SELECT count(*) FROM direct_messages")
    assert count == 1
    assert len(await events(app, "u1")) == 1
    assert len(await typed(app, "u2", "notification.created")) == 1


# ---- the new_message notification ----------------------------------------------------


async def test_the_recipient_gets_a_new_message_notification(
    app: Any, client: httpx.AsyncClient
) -> None:
    body = "0123456789" * 20
    message = (await send(client, "u1", "u2", body)).json()
    inbox = await get(client, "u2", "/api/notifications")
    assert inbox["unread_count"] == 1
    note = inbox["items"][0]
    assert note["type"] == "new_message"
    assert note["title"] == "New message from u1"
    assert note["body"] == body[:140]
    assert note["link"] == "/messages/u1"
    assert note["data"] == {"sender_id": "u1", "preview": body[:140],
                            "message_id": message["id"]}
    assert await typed(app, "u2", "notification.created") == [note]
    assert (await get(client, "u1", "/api/notifications"))["items"] == []


@pytest.mark.parametrize("prefs", [
    {"types": {"new_message": {"in_app": False}}},
    {"muted": True},
])
async def test_the_new_message_notification_follows_the_recipients_preferences(
    app: Any, client: httpx.AsyncClient, prefs: dict[str, Any]
) -> None:
    put = await client.put("/api/notifications/preferences", json=prefs, headers=auth("u2"))
    assert put.status_code == 200, put.text
    assert (await send(client, "u1", "u2", "quiet")).status_code == 201
    assert (await get(client, "u2", "/api/notifications"))["items"] == []
    assert [t for _, t, _ in await events(app, "u2")] == ["message.created"]
    page = await get(client, "u2", "/api/messages/conversation/u1")
    assert [m["body"] for m in page["items"]] == ["quiet"]


# ---- reading -------------------------------------------------------------------------


async def test_a_conversation_pages_newest_first_with_next_before(
    client: httpx.AsyncClient,
) -> None:
    ids = [await sent(client, "u1" if i % 2 else "u2", "u2" if i % 2 else "u1", f"m{i}")
           for i in range(5)]
    await sent(client, "u1", "u3", "elsewhere")
    first = await get(client, "u1", "/api/messages/conversation/u2?limit=2")
    assert [m["id"] for m in first["items"]] == ids[:-3:-1]
    assert first["next_before"] == ids[3]
    second = await get(client, "u2", f"/api/messages/conversation/u1?limit=2&before={ids[3]}")
    assert [m["id"] for m in second["items"]] == [ids[2], ids[1]]
    last = await get(client, "u1",
                     f"/api/messages/conversation/u2?limit=2&before={second['next_before']}")
    assert [m["id"] for m in last["items"]] == [ids[0]]
    assert last["next_before"] is None


async def test_a_conversation_with_a_stranger_is_empty(client: httpx.AsyncClient) -> None:
    await sent(client, "u1", "u2")
    assert await get(client, "u3", "/api/messages/conversation/u1") == {
        "items": [], "next_before": None
    }


@pytest.mark.parametrize("path", [
    "/api/messages/conversation/bad%09id",
    "/api/messages/conversation/" + "x" * 256,
    "/api/messages/conversation/u2?limit=0",
    "/api/messages/conversation/u2?limit=101",
    "/api/messages/conversation/u2?before=abc",
    "/api/messages/conversations?limit=0",
    "/api/messages/conversations?limit=101",
])
async def test_bad_user_ids_and_limits_are_422(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=auth("u1"))
    assert response.status_code == 422


async def test_conversations_are_newest_first_with_unread_counts(
    client: httpx.AsyncClient,
) -> None:
    await sent(client, "u2", "u1", "from u2")
    await sent(client, "u3", "u1", "from u3 a")
    await sent(client, "u3", "u1", "from u3 b")
    await sent(client, "u1", "u4", "to u4")
    last = await sent(client, "u1", "u2", "reply to u2")
    items = (await get(client, "u1", "/api/messages/conversations"))["items"]
    assert [(c["user_id"], c["unread_count"]) for c in items] == [
        ("u2", 1), ("u4", 0), ("u3", 2)
    ]
    assert items[0]["last_message"]["id"] == last
    assert items[2]["last_message"]["body"] == "from u3 b"
    limited = (await get(client, "u1", "/api/messages/conversations?limit=1"))["items"]
    assert [c["user_id"] for c in limited] == ["u2"]
    theirs = (await get(client, "u3", "/api/messages/conversations"))["items"]
    assert [(c["user_id"], c["unread_count"]) for c in theirs] == [("u1", 0)]


# ---- mark-read -----------------------------------------------------------------------


async def test_mark_read_by_ids_changes_only_messages_the_caller_received(
    app: Any, client: httpx.AsyncClient
) -> None:
    from_u2 = await sent(client, "u2", "u1")
    from_u3 = await sent(client, "u3", "u1")
    mine = await sent(client, "u1", "u2")
    others = await sent(client, "u2", "u3")
    response = await mark(client, "u1", {"ids": [from_u2, from_u3, mine, others, 999999]})
    assert response.json() == {"updated": 2}
    assert (await message_row(app, from_u2))["read_at"] is not None  # type: ignore[index]
    for untouched in (mine, others):
        assert (await message_row(app, untouched))["read_at"] is None  # type: ignore[index]
    assert (await typed(app, "u1", "messages.read")) == [
        {"ids": [from_u2, from_u3], "reader_id": "u1"}
    ]
    assert (await typed(app, "u2", "messages.read")) == [{"ids": [from_u2], "reader_id": "u1"}]
    assert (await typed(app, "u3", "messages.read")) == [{"ids": [from_u3], "reader_id": "u1"}]
    page = await get(client, "u2", "/api/messages/conversation/u1")
    read = {m["id"]: m["read_at"] for m in page["items"]}
    assert read[from_u2] is not None and read[from_u2].endswith("Z")
    assert read[mine] is None


async def test_mark_read_by_user_marks_everything_received_from_them(
    app: Any, client: httpx.AsyncClient
) -> None:
    a = await sent(client, "u2", "u1")
    b = await sent(client, "u2", "u1")
    await sent(client, "u1", "u2")
    await sent(client, "u3", "u1")
    assert (await mark(client, "u1", {"user_id": "u2"})).json() == {"updated": 2}
    items = (await get(client, "u1", "/api/messages/conversations"))["items"]
    assert {c["user_id"]: c["unread_count"] for c in items} == {"u2": 0, "u3": 1}
    assert await typed(app, "u2", "messages.read") == [{"ids": [a, b], "reader_id": "u1"}]


async def test_mark_read_that_changes_nothing_emits_no_event(
    app: Any, client: httpx.AsyncClient
) -> None:
    id_ = await sent(client, "u2", "u1")
    assert (await mark(client, "u1", {"ids": [id_]})).json() == {"updated": 1}
    assert (await mark(client, "u1", {"ids": [id_]})).json() == {"updated": 0}
    assert (await mark(client, "u1", {"user_id": "u2"})).json() == {"updated": 0}
    assert (await mark(client, "u1", {"ids": []})).json() == {"updated": 0}
    assert len(await typed(app, "u1", "messages.read")) == 1


@pytest.mark.parametrize("body", [
    {}, {"ids": [1], "user_id": "u2"}, {"user_id": "bad\u007fid"}, {"ids": ["x"]},
])
async def test_mark_read_needs_either_ids_or_a_valid_user_id(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert (await mark(client, "u1", body)).status_code == 422


# ---- delete --------------------------------------------------------------------------


async def test_delete_hides_a_message_for_the_caller_only(
    app: Any, client: httpx.AsyncClient
) -> None:
    id_ = await sent(client, "u1", "u2", "oops")
    before = {u: len(await events(app, u)) for u in ("u1", "u2")}
    assert await delete(client, "u2", id_) == 204
    assert (await get(client, "u2", "/api/messages/conversation/u1"))["items"] == []
    assert (await get(client, "u2", "/api/messages/conversations"))["items"] == []
    assert [m["id"] for m in
            (await get(client, "u1", "/api/messages/conversation/u2"))["items"]] == [id_]
    assert (await events(app, "u2"))[-1][1:] == ("message.deleted", {"id": id_})
    assert len(await events(app, "u1")) == before["u1"]
    assert await delete(client, "u2", id_) == 404
    assert await delete(client, "u2", id_, "?for_everyone=true") == 404


async def test_a_hidden_unread_message_no_longer_counts_as_unread(
    client: httpx.AsyncClient,
) -> None:
    keep = await sent(client, "u2", "u1")
    drop = await sent(client, "u2", "u1")
    assert await delete(client, "u1", drop) == 204
    items = (await get(client, "u1", "/api/messages/conversations"))["items"]
    assert items[0]["unread_count"] == 1
    assert items[0]["last_message"]["id"] == keep
    assert (await mark(client, "u1", {"ids": [drop]})).json() == {"updated": 0}


async def test_delete_for_everyone_removes_it_for_both(
    app: Any, client: httpx.AsyncClient
) -> None:
    id_ = await sent(client, "u1", "u2", "unsend")
    assert await delete(client, "u1", id_, "?for_everyone=true") == 204
    assert await message_row(app, id_) is None
    for user, other in (("u1", "u2"), ("u2", "u1")):
        page = await get(client, user, f"/api/messages/conversation/{other}")
        assert page["items"] == []
        assert ("message.deleted", {"id": id_}) in [e[1:] for e in await events(app, user)]


async def test_delete_for_everyone_by_the_recipient_is_403(
    app: Any, client: httpx.AsyncClient
) -> None:
    id_ = await sent(client, "u1", "u2")
    before = await message_row(app, id_)
    assert await delete(client, "u2", id_, "?for_everyone=true") == 403
    assert await message_row(app, id_) == before


@pytest.mark.parametrize("query", ["", "?for_everyone=true"])
async def test_deleting_someone_elses_message_is_404_and_leaves_it(
    app: Any, client: httpx.AsyncClient, query: str
) -> None:
    id_ = await sent(client, "u1", "u2")
    before = await message_row(app, id_)
    assert await delete(client, "u3", id_, query) == 404
    assert await delete(client, "u3", id_ + 1000, query) == 404
    assert await message_row(app, id_) == before
    assert await events(app, "u3") == []


async def test_deleting_a_non_numeric_id_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/api/messages/abc", headers=auth("u1"))).status_code == 404


# ---- the event log -------------------------------------------------------------------


async def test_concurrent_traffic_both_ways_leaves_gapless_seqs_for_both(
    app: Any, client: httpx.AsyncClient
) -> None:
    await asyncio.gather(*(sent(client, *pair, f"m{i}") for i in range(6)
                           for pair in (("u1", "u2"), ("u2", "u1"))))
    items = (await get(client, "u1", "/api/messages/conversation/u2"))["items"]
    unsend = next(m["id"] for m in items if m["sender_id"] == "u2")
    hide = next(m["id"] for m in items if m["id"] != unsend)
    results = await asyncio.gather(mark(client, "u1", {"user_id": "u2"}),
                                   mark(client, "u2", {"user_id": "u1"}),
                                   delete(client, "u1", hide),
                                   delete(client, "u2", unsend, "?for_everyone=true"))
    assert results[2:] == [204, 204]
    for user in ("u1", "u2"):
        seqs = [seq for seq, _, _ in await events(app, user)]
        assert seqs == list(range(1, len(seqs) + 1))
    # 12 message.created each, 6 notifications each, reads on both sides, deletes
    assert len(await typed(app, "u1", "message.created")) == 12
    assert len(await typed(app, "u2", "notification.created")) == 6


async def test_delete_for_everyone_also_removes_the_new_message_notification(client):
    sent = await client.post("/api/messages/send", json={"recipient_id": "bob", "body": "oops"},
                             headers=auth("alice"))
    other = await client.post("/api/messages/send", json={"recipient_id": "bob", "body": "keep"},
                              headers=auth("alice"))
    assert sent.status_code == other.status_code == 201
    inbox = (await client.get("/api/notifications", headers=auth("bob"))).json()
    assert inbox["unread_count"] == 2
    r = await client.delete(f"/api/messages/{sent.json()['id']}?for_everyone=true",
                            headers=auth("alice"))
    assert r.status_code == 204
    inbox = (await client.get("/api/notifications", headers=auth("bob"))).json()
    assert [n["data"]["message_id"] for n in inbox["items"]] == [other.json()["id"]]
    assert inbox["unread_count"] == 1
