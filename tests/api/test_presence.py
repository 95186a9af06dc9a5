"""``GET /api/presence``: who may see whom, the hidden preference, bad input."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import SERVICE, auth
from tests.waiting import eventually


async def befriend(client: httpx.AsyncClient, a: str, b: str) -> None:
    """Make ``a`` and ``b`` conversation partners: ``a`` writes to ``b``."""
    r = await client.post("/api/messages/send", json={"recipient_id": b, "body": "hi"},
                          headers=auth(a))
    assert r.status_code == 201, r.text


async def presence(client: httpx.AsyncClient, headers: dict[str, str], **params: Any
                   ) -> httpx.Response:
    return await client.get("/api/presence", params=params, headers=headers)


def store(app: Any) -> Any:
    return app.state.services.presence_store


async def test_a_partner_sees_online_and_last_seen_in_the_order_asked(client, app) -> None:
    await befriend(client, "ann", "bob")
    await befriend(client, "cid", "ann")  # either direction makes partners
    await store(app).arrive(["bob", "cid"])
    await store(app).leave(["cid"])  # within the debounce: still online
    r = await presence(client, auth("ann"), user_ids="cid,bob,ann,bob")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [
        {"user_id": "cid", "online": True, "last_seen": None},
        {"user_id": "bob", "online": True, "last_seen": None},
        {"user_id": "ann", "online": False, "last_seen": None},  # yourself: always allowed
    ]}


async def test_an_offline_user_has_the_time_their_last_connection_closed(client, app) -> None:
    await befriend(client, "ann", "bob")
    app.state.services.presence_store.debounce = 0.0
    await store(app).arrive(["bob"])
    await store(app).leave(["bob"])

    async def settled() -> bool:
        await store(app).settle()  # here, or by the hub's own presence task
        return not (await store(app).lookup(["bob"]))["bob"].online

    await eventually(settled)
    left = (await store(app).lookup(["bob"]))["bob"].last_seen
    [item] = (await presence(client, auth("ann"), user_ids="bob")).json()["items"]
    assert item["online"] is False
    assert datetime.fromisoformat(item["last_seen"]).timestamp() == pytest.approx(left, abs=1e-3)
    assert item["last_seen"].endswith("Z")


async def test_someone_who_is_not_a_partner_is_403_and_nothing_is_read(client, app) -> None:
    await befriend(client, "ann", "bob")
    await store(app).arrive(["bob", "eve"])
    r = await presence(client, auth("ann"), user_ids="bob,eve")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:notifyhub:problem:forbidden"
    assert "1 of the user ids are not your conversation partners" in problem["detail"]
    assert "eve" not in r.text  # the input is never echoed back
    # One message, either way, makes them partners.
    await befriend(client, "eve", "ann")
    assert (await presence(client, auth("ann"), user_ids="bob,eve")).status_code == 200


async def test_admins_and_services_see_anyone(client, app) -> None:
    await store(app).arrive(["zed"])
    for headers in (SERVICE, auth("root", admin=True)):
        r = await presence(client, headers, user_ids="zed,nobody")
        assert r.status_code == 200, r.text
        assert [(i["user_id"], i["online"]) for i in r.json()["items"]] == [
            ("zed", True), ("nobody", False)
        ]


async def test_a_hidden_user_looks_offline_to_partners_but_not_to_admins(client, app) -> None:
    await befriend(client, "ann", "bob")
    await store(app).arrive(["bob"])
    r = await client.patch("/api/notifications/preferences", json={"hide_presence": True},
                           headers=auth("bob"))
    assert r.status_code == 200 and r.json()["hide_presence"] is True
    seen_by_ann = (await presence(client, auth("ann"), user_ids="bob")).json()["items"]
    assert seen_by_ann == [{"user_id": "bob", "online": False, "last_seen": None}]
    for headers in (SERVICE, auth("bob")):  # operators, and bob himself, see the truth
        items = (await presence(client, headers, user_ids="bob")).json()["items"]
        assert items[0]["online"] is True
    await client.patch("/api/notifications/preferences", json={"hide_presence": False},
                       headers=auth("bob"))
    assert (await presence(client, auth("ann"), user_ids="bob")).json()["items"][0]["online"]


async def test_ids_with_commas_go_one_by_one_as_user_id(client, app) -> None:
    await befriend(client, "ann", "doe, jane")
    await store(app).arrive(["doe, jane"])
    r = await presence(client, auth("ann"), user_id="doe, jane")
    assert r.json()["items"] == [{"user_id": "doe, jane", "online": True, "last_seen": None}]
    r = await client.get("/api/presence?user_ids=ann&user_id=doe%2C%20jane&user_id=ann",
                         headers=auth("ann"))
    assert [i["user_id"] for i in r.json()["items"]] == ["ann", "doe, jane"]


@pytest.mark.parametrize(("query", "loc"), [
    ("", ["query", "user_ids"]),
    ("user_ids=", ["query", "user_ids"]),
    ("user_ids=,,", ["query", "user_ids"]),
    ("user_ids=" + ",".join(f"u{i}" for i in range(101)), ["query", "user_ids"]),
    ("user_ids=a,%07bell", ["query", "user_ids"]),
    ("user_ids=..", ["query", "user_ids"]),
    ("user_id=" + "x" * 256, ["query", "user_id"]),
])
async def test_bad_input_is_422(client, query: str, loc: list[str]) -> None:
    r = await client.get("/api/presence?" + query, headers=SERVICE)
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:notifyhub:problem:invalid_input"
    assert r.json()["errors"][0]["loc"] == loc


async def test_a_hundred_ids_are_fine_and_repeats_count_once(client) -> None:
    ids = [f"u{i}" for i in range(100)]
    r = await client.get("/api/presence?user_ids=" + ",".join(ids + ids), headers=SERVICE)
    assert r.status_code == 200
    assert [i["user_id"] for i in r.json()["items"]] == ids


async def test_credentials_are_required(client) -> None:
    assert (await presence(client, {}, user_ids="bob")).status_code == 401


async def test_the_route_is_in_openapi(client) -> None:
    op = (await client.get("/openapi.json")).json()["paths"]["/api/presence"]["get"]
    assert op["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert {p["name"] for p in op["parameters"]} == {"user_ids", "user_id"}
    assert {"200", "401", "403", "422", "503"} <= set(op["responses"])
