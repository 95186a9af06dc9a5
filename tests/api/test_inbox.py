"""Seen, archive, snooze and the inbox's filters over REST (docs/api.md, "The inbox")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import SERVICE, auth
from tests.waiting import eventually

U1 = auth("u1")


async def make(client: httpx.AsyncClient, title: str, user: str = "u1", **body: Any) -> int:
    body = {"user_id": user, "type": "t", "title": title, **body}
    r = await client.post("/api/notifications", json=body, headers=SERVICE)
    assert r.status_code == 201, r.text
    return int(r.json()["items"][0]["id"])


async def titles(client: httpx.AsyncClient, query: str = "", user: str = "u1") -> list[str]:
    r = await client.get("/api/notifications?limit=100" + query, headers=auth(user))
    assert r.status_code == 200, r.text
    return [n["title"] for n in r.json()["items"]]


async def counts(client: httpx.AsyncClient, user: str = "u1") -> dict[str, int]:
    return dict((await client.get("/api/notifications/unread-count", headers=auth(user))).json())


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def events(app: Any, user: str = "u1") -> list[tuple[int, str, Any]]:
    rows = await app.state.services.pool.fetch(
        "SELECT seq, type, data FROM user_events WHERE user_id = $1 ORDER BY seq", user)
    return [(r["seq"], r["type"], r["data"]) for r in rows]


# ---- seen --------------------------------------------------------------------------


async def test_seen_by_ids_lowers_unseen_and_leaves_unread(client, app):
    a, b, c = [await make(client, t) for t in "abc"]
    other = await make(client, "theirs", user="u2")
    assert await counts(client) == {"count": 3, "unseen": 3}
    r = await client.post("/api/notifications/seen", json={"ids": [a, b, other]}, headers=U1)
    assert r.json() == {"updated": 2, "unread_count": 3, "unseen_count": 1}
    assert await counts(client) == {"count": 3, "unseen": 1}
    assert await counts(client, "u2") == {"count": 1, "unseen": 1}
    # Seen again: nothing changes, and no event is logged.
    r = await client.post("/api/notifications/seen", json={"ids": [a]}, headers=U1)
    assert r.json() == {"updated": 0, "unread_count": 3, "unseen_count": 1}
    page = (await client.get("/api/notifications", headers=U1)).json()
    assert [(n["id"], n["seen"], n["read"]) for n in page["items"]] == [
        (c, False, False), (b, True, False), (a, True, False)]
    assert page["items"][1]["seen_at"].endswith("Z")
    assert (page["unread_count"], page["unseen_count"]) == (3, 1)
    assert [e[1:] for e in await events(app)][-1] == (
        "notification.seen", {"ids": [a, b], "unread_count": 3, "unseen_count": 1})


async def test_seen_up_to_before_id_is_inclusive_and_leaves_newer_ones_unseen(client):
    ids = [await make(client, t) for t in "abc"]
    r = await client.post("/api/notifications/seen", json={"before_id": ids[1]}, headers=U1)
    assert r.json() == {"updated": 2, "unread_count": 3, "unseen_count": 1}


async def test_reading_marks_seen_too(client):
    a = await make(client, "a")
    await make(client, "b")
    await client.post("/api/notifications/mark-read", json={"ids": [a]}, headers=U1)
    assert await counts(client) == {"count": 1, "unseen": 1}
    await client.post("/api/notifications/mark-all-read", headers=U1)
    assert await counts(client) == {"count": 0, "unseen": 0}
    items = (await client.get("/api/notifications", headers=U1)).json()["items"]
    assert all(n["seen"] and n["seen_at"] for n in items)


async def test_a_selection_needs_ids_or_before_id_but_not_both(client):
    nid = await make(client, "a")
    for path in ("seen", "archive", "unarchive"):
        for body in ({}, {"ids": [nid], "before_id": nid}, {"ids": [0]}, {"before_id": "1"},
                     {"ids": list(range(1, 1002))}, {"ids": [nid], "all": True}):
            r = await client.post(f"/api/notifications/{path}", json=body, headers=U1)
            assert r.status_code == 422, (path, body)
            assert r.headers["content-type"] == "application/problem+json"
    r = await client.post("/api/notifications/seen", json={"ids": [nid]}, headers=SERVICE)
    assert r.status_code == 403
    assert await counts(client) == {"count": 1, "unseen": 1}


# ---- archive -----------------------------------------------------------------------


async def test_archive_moves_out_of_the_inbox_and_its_counts_and_back(client, app):
    a, b, c = [await make(client, t) for t in "abc"]
    r = await client.post("/api/notifications/archive", json={"ids": [b]}, headers=U1)
    assert r.json() == {"updated": 1, "unread_count": 2, "unseen_count": 2}
    assert await titles(client) == ["c", "a"]
    assert await titles(client, "&box=archived") == ["b"]
    assert await titles(client, "&box=all") == ["c", "b", "a"]
    [archived] = (await client.get("/api/notifications?box=archived", headers=U1)).json()["items"]
    assert archived["archived"] is True and archived["archived_at"].endswith("Z")
    r = await client.post("/api/notifications/unarchive", json={"ids": [b, c]}, headers=U1)
    assert r.json() == {"updated": 1, "unread_count": 3, "unseen_count": 3}
    # Back at its place: unarchiving does not make it new.
    assert await titles(client) == ["c", "b", "a"]
    assert [e[1:] for e in await events(app)][-2:] == [
        ("notification.archived", {"ids": [b], "unread_count": 2, "unseen_count": 2}),
        ("notification.unarchived", {"ids": [b], "unread_count": 3, "unseen_count": 3}),
    ]


async def test_archive_up_to_before_id_takes_the_inbox_up_to_there(client):
    a, b, c = [await make(client, t) for t in "abc"]
    r = await client.post("/api/notifications/archive", json={"before_id": b}, headers=U1)
    assert r.json() == {"updated": 2, "unread_count": 1, "unseen_count": 1}
    assert await titles(client) == ["c"]
    r = await client.post("/api/notifications/unarchive", json={"before_id": a}, headers=U1)
    assert r.json()["updated"] == 1
    assert await titles(client) == ["c", "a"]
    assert await titles(client, "&box=archived") == ["b"]


async def test_mark_all_read_leaves_the_archive_alone(client):
    a = await make(client, "a")
    await make(client, "b")
    await client.post("/api/notifications/archive", json={"ids": [a]}, headers=U1)
    r = await client.post("/api/notifications/mark-all-read", headers=U1)
    assert r.json() == {"updated": 1, "unread_count": 0, "unseen_count": 0}
    [kept] = (await client.get("/api/notifications?box=archived", headers=U1)).json()["items"]
    assert kept["read"] is False
    await client.post("/api/notifications/unarchive", json={"ids": [a]}, headers=U1)
    assert await counts(client) == {"count": 1, "unseen": 1}


async def test_unknown_box_is_422(client):
    for box in ("snoozed", "INBOX", "x"):
        r = await client.get(f"/api/notifications?box={box}", headers=U1)
        assert r.status_code == 422, box
        assert r.json()["errors"] == [{"loc": ["query", "box"],
                                       "msg": "one of inbox, archived, all"}]


# ---- snooze ------------------------------------------------------------------------


async def test_snooze_hides_a_notification_until_it_returns_on_top_as_new(client, app):
    a, b = await make(client, "a"), await make(client, "b")
    await client.post("/api/notifications/mark-read", json={"ids": [a]}, headers=U1)
    await client.post("/api/notifications/archive", json={"ids": [a]}, headers=U1)
    r = await client.post(f"/api/notifications/{a}/snooze", json={"until": later(1.5)},
                          headers=U1)
    assert r.status_code == 200, r.text
    snoozed = r.json()
    assert set(snoozed) == {"id", "snoozed_until", "unread_count", "unseen_count"}
    assert snoozed["id"] == a and snoozed["snoozed_until"].endswith("Z")
    assert (snoozed["unread_count"], snoozed["unseen_count"]) == (1, 1)
    # Out of the inbox and the archive; listed in box=all with its time.
    assert await titles(client) == ["b"]
    assert await titles(client, "&box=archived") == []
    [waiting] = [n for n in (await client.get("/api/notifications?box=all", headers=U1)
                             ).json()["items"] if n["id"] == a]
    assert waiting["snoozed_until"] == snoozed["snoozed_until"]

    async def returned() -> dict[str, Any] | None:
        items = (await client.get("/api/notifications", headers=U1)).json()["items"]
        return items[0] if items and items[0]["id"] == a else None

    # The app's scheduler returns it: on top, unread, unseen, out of the archive.
    back = await eventually(returned)
    assert back["title"] == "a" and back["position"] > b
    assert (back["read"], back["seen"], back["archived"], back["snoozed_until"]) == (
        False, False, False, None)
    assert await titles(client) == ["a", "b"]
    assert await counts(client) == {"count": 2, "unseen": 2}
    logged = [e[1:] for e in await events(app)]
    assert logged[-2][0] == "notification.snoozed"
    assert logged[-1] == ("notification.unsnoozed", {
        "notification": back, "unread_count": 2, "unseen_count": 2})


async def test_snoozing_into_the_past_is_422_and_changes_nothing(client, app):
    nid = await make(client, "a")
    before = await events(app)
    cases = [
        ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "must be in the future"),
        ("2026-05-01T10:00:00", "must include a time zone"),
        (later(366 * 86400), "must be within 365 days"),
        ("tomorrow", None),
        (1767225600, "must be an RFC 3339 timestamp with a time zone"),
    ]
    for until, msg in cases:
        r = await client.post(f"/api/notifications/{nid}/snooze", json={"until": until},
                              headers=U1)
        assert r.status_code == 422, until
        [error] = r.json()["errors"]
        assert error["loc"] == ["until"]
        if msg is not None:
            assert error["msg"] == msg
    r = await client.post(f"/api/notifications/{nid}/snooze", json={}, headers=U1)
    assert r.status_code == 422
    assert await titles(client) == ["a"]
    assert await events(app) == before


async def test_snoozing_past_the_expiry_or_someone_elses_is_refused(client, app):
    short = await make(client, "short", expires_at=later(60))
    theirs = await make(client, "theirs", user="u2")
    before = await events(app)
    r = await client.post(f"/api/notifications/{short}/snooze", json={"until": later(120)},
                          headers=U1)
    assert r.status_code == 422
    assert r.json()["errors"] == [{"loc": ["until"],
                                   "msg": "must be before the notification's expires_at"}]
    for nid in (theirs, 999999):
        r = await client.post(f"/api/notifications/{nid}/snooze", json={"until": later(60)},
                              headers=U1)
        assert r.status_code == 404
    r = await client.post(f"/api/notifications/{short}/snooze", json={"until": later(30)},
                          headers=SERVICE)
    assert r.status_code == 403
    assert await events(app) == before
    assert await titles(client) == ["short"]


async def test_archiving_a_snoozed_notification_ends_its_snooze(client):
    nid = await make(client, "a")
    await client.post(f"/api/notifications/{nid}/snooze", json={"until": later(3600)},
                      headers=U1)
    await client.post("/api/notifications/archive", json={"ids": [nid]}, headers=U1)
    [item] = (await client.get("/api/notifications?box=archived", headers=U1)).json()["items"]
    assert item["snoozed_until"] is None
    # ... so unarchiving brings it back now, not at the snooze's time.
    await client.post("/api/notifications/unarchive", json={"ids": [nid]}, headers=U1)
    assert await titles(client) == ["a"]


# ---- filters and cursors -----------------------------------------------------------


async def test_filters_by_types_priority_read_state_dates_and_search(client, app):
    a = await make(client, "alpha grade", type="grade_posted", priority="high")
    await make(client, "beta", type="friend_request")
    c = await make(client, "gamma grade", type="new_message", priority="low")
    await make(client, "delta", type="grade_posted")
    await client.post("/api/notifications/mark-read", json={"ids": [a, c]}, headers=U1)
    assert await titles(client, "&type=grade_posted&type=new_message") == [
        "delta", "gamma grade", "alpha grade"]
    # A comma is part of a type's name, not a separator.
    assert await titles(client, "&type=grade_posted,new_message") == []
    assert await titles(client, "&priority=high&priority=low") == ["gamma grade", "alpha grade"]
    assert await titles(client, "&read=true") == ["gamma grade", "alpha grade"]
    assert await titles(client, "&read=false") == ["delta", "beta"]
    assert await titles(client, "&unread_only=true") == ["delta", "beta"]
    assert await titles(client, "&read=false&type=grade_posted") == ["delta"]
    assert await titles(client, "&q=GRADE&read=true&priority=low") == ["gamma grade"]
    # created_at: since inclusive, until exclusive.
    await app.state.services.pool.execute(
        "UPDATE notifications SET created_at = $2 WHERE id = $1",
        a, datetime(2026, 1, 10, tzinfo=UTC))
    await app.state.services.pool.execute(
        "UPDATE notifications SET created_at = $2 WHERE id = $1",
        c, datetime(2026, 1, 20, tzinfo=UTC))
    params = {"since": "2026-01-10T00:00:00Z", "until": "2026-01-20T00:00:00+00:00"}
    r = await client.get("/api/notifications", params=params, headers=U1)
    assert [n["title"] for n in r.json()["items"]] == ["alpha grade"]
    r = await client.get("/api/notifications", params={"until": "2026-01-21T00:00:00+01:00"},
                         headers=U1)
    assert [n["title"] for n in r.json()["items"]] == ["gamma grade", "alpha grade"]


async def test_bad_filters_are_422_naming_the_parameter(client):
    await make(client, "a")
    cases = {
        "priority=urgent": "priority",
        "read=maybe": "read",
        "unread_only=true&read=true": "read",
        "since=2026-01-01T00:00:00": "since",
        "until=2026-01-01T00:00:00 01:00": "until",
        "since=1999-12-31T00:00:00Z": "since",
        "type=" + "x" * 201: "type",
        "&".join(f"type=t{i}" for i in range(21)): "type",
    }
    for query, name in cases.items():
        r = await client.get("/api/notifications?" + query, headers=U1)
        assert r.status_code == 422, query
        assert r.json()["errors"][0]["loc"] == ["query", name], query


async def test_pages_stay_stable_while_new_and_returning_notifications_arrive(client, app):
    ids = [await make(client, f"n{i}") for i in range(7)]
    snoozed = ids[5]
    await client.post(f"/api/notifications/{snoozed}/snooze", json={"until": later(3600)},
                      headers=U1)
    r = await client.get("/api/notifications?limit=3", headers=U1)
    page = r.json()
    walked = [n["title"] for n in page["items"]]
    assert walked == ["n6", "n4", "n3"]
    # Meanwhile: a new one, and the snoozed one comes back (its time moved to the past).
    await make(client, "new")
    await app.state.services.pool.execute(
        "UPDATE notifications SET snoozed_until = now() - interval '1 second' WHERE id = $1",
        snoozed)
    from hub import inbox
    assert await inbox.return_due(app.state.services) == 1
    while page["next_before"] is not None:
        r = await client.get(f"/api/notifications?limit=3&before={page['next_before']}",
                             headers=U1)
        page = r.json()
        walked += [n["title"] for n in page["items"]]
    # Each old one exactly once, in order; the new and the returned one are on top.
    assert walked == ["n6", "n4", "n3", "n2", "n1", "n0"]
    assert (await titles(client))[:2] == ["n5", "new"]
