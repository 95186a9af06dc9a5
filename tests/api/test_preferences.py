"""Preferences storage and their effect on creates (docs/api.md, "Preferences")."""

from __future__ import annotations

import asyncio

from tests.conftest import SERVICE, auth

FULL = {
    "muted": False,
    "channels": {"in_app": True, "email": True, "push": False, "sms": False, "webhook": False},
    "types": {"grade_posted": {"in_app": True, "email": False}},
    "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"},
    "digest": "daily",
    "hide_presence": False,
}


async def test_defaults_before_anything_is_saved(client):
    r = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert r.status_code == 200
    assert r.json() == {
        "muted": False,
        "channels": {"in_app": True, "email": True, "push": False, "sms": False, "webhook": False},
        "types": {},
        "quiet_hours": None,
        "digest": "off",
        "hide_presence": False,
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
        {**FULL, "digest": "monthly"},
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
    assert r.json() == {"items": [], "suppressed": ["u1"], "grouped": False}


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
    # Longer than a user id may be (a space or a | is fine).
    r = await client.get(f"/api/users/{'x' * 256}/preferences", headers=SERVICE)
    assert r.status_code == 422


async def patch(client, body, user="u1"):
    return await client.patch("/api/notifications/preferences", json=body, headers=auth(user))


async def test_patch_changes_only_what_it_names_and_merges_maps(client):
    assert (await client.put("/api/notifications/preferences", json=FULL,
                             headers=auth("u1"))).status_code == 200
    r = await patch(client, {"channels": {"push": True},
                             "types": {"grade_posted": {"push": True}, "new_message": {}}})
    assert r.status_code == 200
    expected = {
        **FULL,
        "channels": {"in_app": True, "email": True, "push": True, "sms": False,
                     "webhook": False},
        "types": {"grade_posted": {"in_app": True, "email": False, "push": True},
                  "new_message": {}},
    }
    assert r.json() == expected
    stored = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert stored.json() == expected


async def test_patch_with_null_quiet_hours_removes_them_and_muted_mutes(client):
    await client.put("/api/notifications/preferences", json=FULL, headers=auth("u1"))
    r = await patch(client, {"quiet_hours": None, "muted": True})
    assert r.status_code == 200
    assert r.json() == {**FULL, "quiet_hours": None, "muted": True}


async def test_patch_of_a_user_who_never_saved_starts_from_the_defaults(client):
    r = await patch(client, {"digest": "hourly"}, user="fresh")
    assert r.status_code == 200
    assert r.json() == {"muted": False, "channels": {"in_app": True, "email": True,
                        "push": False, "sms": False, "webhook": False}, "types": {},
                        "quiet_hours": None, "digest": "hourly", "hide_presence": False}


async def test_patch_refuses_unknown_fields_and_bad_values(client):
    for body in ({"colour": "red"}, {"digest": "monthly"}, {"channels": {"Email": True}},
                 {"quiet_hours": {"start": "25:00", "end": "07:00"}}):
        r = await patch(client, body)
        assert r.status_code == 422, body


async def test_concurrent_patches_of_different_fields_all_take_effect(client):
    bodies = [{"types": {f"t{n}": {"email": False}}} for n in range(10)]
    results = await asyncio.wait_for(
        asyncio.gather(*(patch(client, body) for body in bodies)), 15
    )
    assert all(r.status_code == 200 for r in results)
    stored = (await client.get("/api/notifications/preferences", headers=auth("u1"))).json()
    assert stored["types"] == {f"t{n}": {"email": False} for n in range(10)}


async def test_only_the_known_channels_are_accepted_with_a_422_naming_them(client):
    many = {f"c{n}": True for n in range(30_000)}
    for body in ({"channels": {"slack": True}}, {"channels": many},
                 {"types": {"grade_posted": {"slack": False}}},
                 {"types": {f"t{n}": {"slack": True} for n in range(200)}}):
        for send in (client.put, client.patch):
            r = await send("/api/notifications/preferences", json=body, headers=auth("u1"))
            assert r.status_code == 422, (send, str(body)[:60])
            errors = r.json()["errors"]
            assert 1 <= len(errors) <= 200  # one error per map, not one per key
            assert "in_app, email, push, sms and webhook" in errors[0]["msg"]
            assert "c1" not in r.text and "slack" not in r.text  # the input is not echoed
    r = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert r.json()["channels"] == {"in_app": True, "email": True, "push": False,
                                    "sms": False, "webhook": False}


async def test_more_than_200_types_are_422_on_put_and_patch(client):
    for count, status in ((200, 200), (201, 422), (30_000, 422)):
        body = {"types": {f"t{n}": {"email": False} for n in range(count)}}
        r = await client.put("/api/notifications/preferences", json=body, headers=auth("u1"))
        assert r.status_code == status, count
        if status == 422:
            assert len(r.json()["errors"]) == 1
            assert "at most 200 types" in r.json()["errors"][0]["msg"]
    # A patch that adds a 201st type to the stored 200 is refused too.
    r = await patch(client, {"types": {"one_more": {"email": True}}})
    assert r.status_code == 422
    assert "at most 200 types" in str(r.json())


async def test_stored_preferences_with_channels_no_longer_accepted_still_load(app, client):
    legacy = {**FULL, "channels": {"in_app": False, "email": True, "fax": True},
              "types": {"grade_posted": {"in_app": True, "slack": True}}}
    await app.state.services.pool.execute(
        "INSERT INTO preferences (user_id, prefs) VALUES ('u1', $1)", legacy)
    r = await client.get("/api/notifications/preferences", headers=auth("u1"))
    assert r.status_code == 200
    assert r.json()["channels"] == {"in_app": False, "email": True}
    assert r.json()["types"] == {"grade_posted": {"in_app": True}}
    # What GET answers can be sent back as it is, and a patch keeps the rest.
    assert (await client.put("/api/notifications/preferences", json=r.json(),
                             headers=auth("u1"))).status_code == 200
    await app.state.services.pool.execute(
        "UPDATE preferences SET prefs = $1 WHERE user_id = 'u1'", legacy)
    r = await patch(client, {"digest": "hourly"})
    assert r.status_code == 200
    assert r.json()["channels"] == {"in_app": False, "email": True}
    assert r.json()["digest"] == "hourly"
    # Creates still read them: in_app off suppresses, the type's own map wins.
    await app.state.services.pool.execute(
        "UPDATE preferences SET prefs = $1 WHERE user_id = 'u1'", legacy)
    assert (await create(client, ["u1"], type_="friend_request")).json()["suppressed"] == ["u1"]
    assert (await create(client, ["u1"])).json()["suppressed"] == []
