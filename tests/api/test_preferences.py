"""Preferences storage and their effect on creates (CONTRACT §3)."""

from __future__ import annotations

from tests.conftest import SERVICE, auth

FULL = {
    "muted": False,
    "channels": {"in_app": True, "email": True, "push": False},
    "types": {"grade_posted": {"in_app": True, "email": False}},
    "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"},
    "digest": "daily",
}


async def test_defaults_before_anything_is_saved(client):
    r = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert r.status_code == 200
    assert r.json() == {
        "muted": False,
        "channels": {"in_app": True, "email": True, "push": False},
        "types": {},
        "quiet_hours": None,
        "digest": "off",
    }


async def test_put_returns_and_stores_the_whole_document(client):
    r = await client.put("/api/notifications/preferences", json=FULL, headers=auth("u1"))
    assert r.status_code == 200 and r.json() == FULL
    r = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert r.json() == FULL
    r = await client.get("/api/notifications/preferences", headers=auth("u2"))
    assert r.json()["digest"] == "off"


async def test_invalid_preferences_are_422(client):
    bad = [
        {**FULL, "digest": "weekly"},
        {**FULL, "quiet_hours": {"start": "25:00", "end": "07:00", "timezone": "UTC"}},
        {**FULL, "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}},
        {**FULL, "channels": {"in_app": "yes please"}},
        {**FULL, "unknown": 1},
    ]
    for body in bad:
        r = await client.put("/api/notifications/preferences", json=body, headers=auth("u1"))
        assert r.status_code == 422, body


async def create(client, user_ids, type_="grade_posted"):
    return await client.post(
        "/api/notifications",
        json={"user_ids": user_ids, "type": type_, "title": "t"},
        headers=SERVICE,
    )


async def test_type_with_in_app_off_is_suppressed_not_stored(client):
    prefs = {**FULL, "types": {"grade_posted": {"in_app": False}}}
    await client.put("/api/notifications/preferences", json=prefs, headers=auth("u1"))
    r = await create(client, ["u1", "u2"])
    assert r.status_code == 201
    assert r.json()["suppressed"] == ["u1"]
    assert [n["user_id"] for n in r.json()["items"]] == ["u2"]
    r = await client.get("/api/notifications", headers=auth("u1"))
    assert r.json()["items"] == []
    r = await create(client, ["u1"], type_="friend_request")
    assert r.json()["suppressed"] == []


async def test_muted_suppresses_every_type(client):
    await client.put("/api/notifications/preferences", json={**FULL, "muted": True},
                     headers=auth("u1"))
    r = await create(client, ["u1"], type_="anything")
    assert r.json() == {"items": [], "suppressed": ["u1"]}


async def test_type_absent_follows_channels(client):
    prefs = {**FULL, "channels": {"in_app": False}, "types": {"grade_posted": {"in_app": True}}}
    await client.put("/api/notifications/preferences", json=prefs, headers=auth("u1"))
    assert (await create(client, ["u1"], "grade_posted")).json()["suppressed"] == []
    assert (await create(client, ["u1"], "friend_request")).json()["suppressed"] == ["u1"]
    prefs["types"] = {"friend_request": {"email": True}}
    await client.put("/api/notifications/preferences", json=prefs, headers=auth("u1"))
    assert (await create(client, ["u1"], "friend_request")).json()["suppressed"] == ["u1"]


async def test_services_read_a_users_preferences_and_users_cannot(client):
    await client.put("/api/notifications/preferences", json=FULL, headers=auth("u1"))
    r = await client.get("/api/users/u1/preferences", headers=SERVICE)
    assert r.status_code == 200 and r.json() == FULL
    r = await client.get("/api/users/u2/preferences", headers=auth("admin", admin=True))
    assert r.status_code == 200 and r.json()["digest"] == "off"
    assert (await client.get("/api/users/u1/preferences", headers=auth("u2"))).status_code == 403
    assert (await client.get("/api/users/u1/preferences")).status_code == 401
    assert (await client.get("/api/users/bad%20id/preferences", headers=SERVICE)).status_code == 422
