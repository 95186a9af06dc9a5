"""The user directory (PUT/GET/DELETE /api/users/{id}/contact), inline contacts on
create, and GET /api/notifications/{id}/deliveries (docs/delivery.md)."""

from __future__ import annotations

import shutil
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SERVICE, auth

ANN = {"email": "ann@example.com", "phone": "+14155550123", "locale": "pt-BR",
       "time_zone": "Europe/Paris"}


async def test_a_contact_is_stored_read_replaced_and_deleted(client):
    r = await client.put("/api/users/ann/contact", json=ANN, headers=SERVICE)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ANN} == ANN and r.json()["user_id"] == "ann"
    r = await client.get("/api/users/ann/contact", headers=auth("root", admin=True))
    assert r.status_code == 200 and r.json()["email"] == "ann@example.com"
    r = await client.put("/api/users/ann/contact", json={"email": "new@example.com"},
                         headers=SERVICE)
    assert r.json()["email"] == "new@example.com" and r.json()["phone"] is None  # whole
    assert (await client.delete("/api/users/ann/contact", headers=SERVICE)).status_code == 204
    r = await client.get("/api/users/ann/contact", headers=SERVICE)
    assert r.status_code == 404 and r.json()["type"].endswith("not_found")
    assert (await client.delete("/api/users/ann/contact", headers=SERVICE)).status_code == 404


async def test_a_user_id_with_a_slash_is_one_path_segment(client):
    r = await client.put("/api/users/team%2Fann/contact", json={"locale": "en"},
                         headers=SERVICE)
    assert r.status_code == 200 and r.json()["user_id"] == "team/ann"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_the_contact_api_is_for_admins_and_services_only(client, method):
    body = {"json": ANN} if method == "PUT" else {}
    r = await client.request(method, "/api/users/ann/contact", headers=auth("ann"), **body)
    assert r.status_code == 403
    r = await client.request(method, "/api/users/ann/contact", **body)
    assert r.status_code == 401


@pytest.mark.parametrize("field,value", [
    ("email", "not-an-address"),
    ("email", "ann@localhost"),
    ("email", "a b@example.com"),
    ("email", "x" * 250 + "@example.com"),
    ("phone", "4155550123"),
    ("phone", "+1415"),
    ("phone", "+1 415 555 0123"),
    ("phone", "+1234567890123456"),
    ("locale", "english please"),
    ("locale", "e"),
    ("time_zone", "Mars/Olympus_Mons"),
    ("time_zone", "../../etc/passwd"),
    ("time_zone", "localtime"),  # a zone file of the machine, not a zone name
    ("time_zone", ""),
    ("email", 5),
    ("nickname", "ann"),
])
async def test_an_invalid_contact_is_422_naming_the_field(client, field, value):
    r = await client.put("/api/users/ann/contact", json={field: value}, headers=SERVICE)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["loc"][0] == field
    assert (await client.get("/api/users/ann/contact", headers=SERVICE)).status_code == 404


async def test_an_inline_contact_is_stored_with_the_notification_and_merged(client):
    await client.put("/api/users/ann/contact", json={"phone": "+14155550123"},
                     headers=SERVICE)
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "ann", "type": "t", "title": "x",
        "contact": {"email": "ann@example.com", "time_zone": "Asia/Tokyo"},
    })
    assert r.status_code == 201, r.text
    stored = (await client.get("/api/users/ann/contact", headers=SERVICE)).json()
    assert stored["email"] == "ann@example.com" and stored["time_zone"] == "Asia/Tokyo"
    assert stored["phone"] == "+14155550123"  # not given inline: kept
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_ids": ["bob"], "type": "t", "title": "x", "contact": {"locale": "de"},
    })
    assert r.status_code == 201
    assert (await client.get("/api/users/bob/contact", headers=SERVICE)).json()["locale"] == "de"


async def test_an_inline_contact_for_several_recipients_is_422(client):
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_ids": ["ann", "bob"], "type": "t", "title": "x",
        "contact": {"email": "ann@example.com"},
    })
    assert r.status_code == 422
    assert "single recipient" in r.json()["errors"][0]["msg"]
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "ann", "type": "t", "title": "x", "contact": {"email": "nope"},
    })
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["contact", "email"]
    for user in ("ann", "bob"):
        assert (await client.get(f"/api/users/{user}/contact", headers=SERVICE)
                ).status_code == 404
    assert (await client.get("/api/notifications", headers=auth("ann"))).json()["items"] == []


async def test_a_notifications_deliveries_are_for_admins_and_404_when_unknown(client):
    r = await client.post("/api/notifications", headers=SERVICE,
                          json={"user_id": "ann", "type": "t", "title": "x"})
    id_ = r.json()["items"][0]["id"]
    r = await client.get(f"/api/notifications/{id_}/deliveries", headers=SERVICE)
    assert r.status_code == 200 and r.json() == {"items": []}  # no channel configured
    r = await client.get(f"/api/notifications/{id_}/deliveries", headers=auth("ann"))
    assert r.status_code == 403
    r = await client.get("/api/notifications/999999/deliveries", headers=SERVICE)
    assert r.status_code == 404
    r = await client.get("/api/notifications/abc/deliveries", headers=SERVICE)
    assert r.status_code == 404


@contextmanager
def zone_only_python_knows(directory: Path) -> Iterator[str]:
    """A time zone name Python's zoneinfo knows and PostgreSQL does not (as a tz database
    newer than PostgreSQL's would have): a real zone file under a new name in
    ``directory``, on zoneinfo's search path until the block ends."""
    source = next(Path(d, "Europe", "Paris") for d in zoneinfo.TZPATH
                  if Path(d, "Europe", "Paris").is_file())
    (directory / "Test").mkdir()
    shutil.copy(source, directory / "Test" / "Newer_Than_Postgres")
    before = zoneinfo.TZPATH
    zoneinfo.reset_tzpath(to=[str(directory), *before])
    zoneinfo.ZoneInfo.clear_cache()
    try:
        zoneinfo.ZoneInfo("Test/Newer_Than_Postgres")  # Python knows it now
        yield "Test/Newer_Than_Postgres"
    finally:
        zoneinfo.reset_tzpath(to=before)
        zoneinfo.ZoneInfo.clear_cache()


@pytest.fixture
def python_only_zone(tmp_path: Path) -> Iterator[str]:
    with zone_only_python_knows(tmp_path) as zone:
        yield zone


def _names_the_database(r, loc: list[str]) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    [error] = r.json()["errors"]
    assert error["loc"] == loc and "PostgreSQL" in error["msg"]


async def test_a_time_zone_postgresql_does_not_know_is_422_on_put(client, python_only_zone):
    r = await client.put("/api/users/ann/contact", headers=SERVICE,
                         json={"email": "ann@example.com", "time_zone": python_only_zone})
    _names_the_database(r, ["time_zone"])
    assert (await client.get("/api/users/ann/contact", headers=SERVICE)).status_code == 404
    r = await client.put("/api/users/ann/contact", headers=SERVICE,
                         json={"email": "ann@example.com", "time_zone": "Europe/Paris"})
    assert r.status_code == 200, r.text


async def test_an_inline_time_zone_postgresql_does_not_know_refuses_that_create_alone(
    client, python_only_zone
):
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "ann", "type": "t", "title": "x",
        "contact": {"email": "ann@example.com", "time_zone": python_only_zone},
    })
    _names_the_database(r, ["contact", "time_zone"])
    assert (await client.get("/api/users/ann/contact", headers=SERVICE)).status_code == 404
    r = await client.get("/api/notifications", headers=auth("ann"))
    assert r.json()["items"] == []
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "ann", "type": "t", "title": "x",
        "contact": {"email": "ann@example.com", "time_zone": "Europe/Paris"},
    })
    assert r.status_code == 201, r.text


async def test_quiet_hours_in_a_time_zone_postgresql_does_not_know_are_422(
    client, python_only_zone
):
    quiet = {"start": "22:00", "end": "07:00", "timezone": python_only_zone}
    r = await client.put("/api/notifications/preferences", headers=auth("ann"),
                         json={"quiet_hours": quiet})
    _names_the_database(r, ["quiet_hours", "timezone"])
    r = await client.patch("/api/notifications/preferences", headers=auth("ann"),
                           json={"quiet_hours": quiet})
    _names_the_database(r, ["quiet_hours", "timezone"])
    r = await client.get("/api/notifications/preferences", headers=auth("ann"))
    assert r.json()["quiet_hours"] is None
