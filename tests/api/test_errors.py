"""Bad input gets a clear problem+json answer, never a 500 or a dropped connection."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from api.errors import INTERNAL, answer_for
from api.problems import HANDLERS, CatchAll
from db.errors import ClaimTaken, DatabaseError, DatabaseUnavailable, SchemaMissing
from hub import errors
from pubsub.errors import BrokerUnavailable
from tests.conftest import SERVICE, auth


async def test_nul_characters_anywhere_in_a_body_are_422(client):
    bodies = [
        {"user_id": "u1", "type": "t", "title": "a\u0000b"},
        {"user_id": "u1", "type": "t", "title": "t", "data": {"k": ["ok", "x\u0000"]}},
        {"user_id": "u1", "type": "t", "title": "t", "data": {"k\u0000": 1}},
    ]
    for body in bodies:
        r = await client.post("/api/notifications", json=body, headers=SERVICE)
        assert r.status_code == 422, body
        assert "NUL" in str(r.json()["errors"])


async def test_json_nested_deeper_than_32_levels_is_422_on_every_validated_route(client):
    deep = "[" * 990 + "]" * 990
    cases = [
        ("POST", "/api/notifications", SERVICE,
         '{"user_id":"u1","type":"t","title":"t","data":{"x":' + deep + "}}"),
        ("PUT", "/api/notifications/preferences", auth("u1"), '{"types":{"t":' + deep + "}}"),
        ("POST", "/api/messages/send", auth("u1"), '{"recipient_id":"u2","body":' + deep + "}"),
    ]
    for method, path, headers, body in cases:
        r = await client.request(method, path, content=body,
                                 headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 422, (path, r.status_code)
        assert "more than 32 levels deep" in r.json()["detail"]
    # 32 levels is still fine.
    ok = {"x": 0}
    for _ in range(30):
        ok = {"x": ok}
    r = await client.post("/api/notifications", headers=SERVICE,
                          json={"user_id": "u1", "type": "t", "title": "t", "data": ok})
    assert r.status_code == 201


async def test_nul_in_query_is_422(client):
    for query in ("q=%00", "type=a%00"):
        r = await client.get(f"/api/notifications?{query}", headers=auth("u1"))
        assert r.status_code == 422, query


async def test_types_are_not_coerced(client):
    r = await client.put("/api/notifications/preferences", json={"muted": "yes"},
                         headers=auth("u1"))
    assert r.status_code == 422
    r = await client.post("/api/notifications/mark-read", json={"ids": ["1"]}, headers=auth("u1"))
    assert r.status_code == 422
    r = await client.post("/api/announcements", json={"title": "x", "starts_at": 0},
                          headers=SERVICE)
    assert r.status_code == 422


async def test_timestamps_outside_the_supported_range_are_422(client):
    for stamp in ("0001-01-01T00:00:00+01:00", "1999-12-31T23:00:00Z"):
        r = await client.post("/api/announcements", json={"title": "x", "starts_at": stamp},
                              headers=SERVICE)
        assert r.status_code == 422, stamp


async def test_announcement_timestamps_accept_iso_text(client):
    r = await client.post("/api/announcements",
                          json={"title": "x", "starts_at": "2026-01-01T00:00:00Z"},
                          headers=SERVICE)
    assert r.status_code == 201


async def test_non_json_content_type_is_415(client):
    r = await client.post("/api/notifications", content=b'{"user_id":"u1"}',
                          headers={**SERVICE, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_body_sent_as_a_form_gets_415_saying_which_header_to_send(client):
    # What `curl -d '{...}' URL` sends: a JSON body labelled as a form.
    r = await client.post("/api/notifications", content=b'{"user_id":"u1"}',
                          headers={**SERVICE,
                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    detail = r.json()["detail"]
    assert "Content-Type: application/json" in detail
    assert "curl -d" in detail
    for media in ("text/plain", "multipart/form-data; boundary=x"):
        r = await client.put("/api/notifications/preferences", content=b"{}",
                             headers={**auth("u1"), "Content-Type": media})
        assert r.status_code == 415, media
        assert "Content-Type: application/json" in r.json()["detail"]


async def test_an_empty_body_is_accepted_with_any_content_type_where_the_body_is_optional(
    client,
):
    # `curl -X POST -d '' URL` labels its empty body as a form.
    for media in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = auth("u1") if media is None else {**auth("u1"), "Content-Type": media}
        r = await client.post("/api/notifications/mark-all-read", content=b"", headers=headers)
        assert r.status_code == 200, (media, r.text)
        assert r.json() == {"updated": 0, "unread_count": 0, "unseen_count": 0}
    # A non-empty body must still be JSON, and a body that is required must be there.
    r = await client.post("/api/notifications/mark-all-read", content=b"before_id=5",
                          headers={**auth("u1"),
                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await client.post("/api/notifications/mark-read", content=b"",
                          headers={**auth("u1"),
                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await client.post("/api/notifications/mark-read", content=b"", headers=auth("u1"))
    assert r.status_code == 422


async def test_mark_all_read_accepts_an_empty_chunked_body(client):
    async def empty():
        yield b""

    r = await client.post("/api/notifications/mark-all-read", content=empty(),
                          headers=auth("u1"))
    assert r.status_code == 200


async def test_query_integers_are_plain_digits(client):
    for bad in ["+5", "1_0", " 5", "٥"]:
        r = await client.get("/api/notifications", params={"limit": bad}, headers=auth("u1"))
        assert r.status_code == 422, bad


async def test_unexpected_error_is_a_500_problem_and_the_connection_survives():
    async def boom(request):
        raise RuntimeError("bug")

    async def fine(request):
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/boom", boom), Route("/fine", fine)],
                    middleware=[Middleware(CatchAll)], exception_handlers=HANDLERS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "bug" not in r.text
        assert (await client.get("/fine")).text == "ok"


async def test_database_down_is_503(app, client):
    await app.state.services.pool.close()
    r = await client.get("/api/notifications", headers=auth("u1"))
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"


def test_every_error_the_hub_raises_has_one_answer_in_the_table():
    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    for cls in [*subclasses(errors.HubError)[1:], *subclasses(DatabaseError)[1:],
                BrokerUnavailable]:
        # A hub without its tables is misconfigured, and a ClaimTaken is made again in a
        # transaction by hub.notifications: one reaching an edge is a bug. Both are 500s.
        if cls in (SchemaMissing, ClaimTaken):
            assert answer_for(cls()) is INTERNAL
            continue
        assert answer_for(cls()) is not INTERNAL, cls
    assert answer_for(ValueError()) is INTERNAL
    assert {a.code for a in (answer_for(DatabaseUnavailable()), answer_for(
        BrokerUnavailable()), answer_for(errors.Unavailable()))} == {"unavailable"}


async def test_a_problem_type_names_the_same_code_as_the_live_protocol(client):
    r = await client.delete("/api/notifications/999999", headers=auth("u1"))
    assert r.status_code == 404
    assert r.json()["type"] == "urn:notifyhub:problem:not_found"
    r = await client.post("/api/notifications", json={"user_id": "u1"}, headers=SERVICE)
    assert r.json()["type"] == "urn:notifyhub:problem:invalid_input"
    r = await client.get("/api/notifications")
    assert r.json()["type"] == "urn:notifyhub:problem:unauthorized"


async def test_a_database_that_is_down_is_a_dependency_error_never_a_driver_exception(app):
    svc = app.state.services
    await svc.pool.close()
    with pytest.raises(DatabaseUnavailable) as caught:
        await svc.pool.fetchval("SELECT 1")
    assert type(caught.value).__module__ == "db.errors"
