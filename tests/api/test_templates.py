"""Notification templates over REST: admin only, safe placeholders (docs/api.md, "Templates")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import SERVICE, auth

ADMIN = auth("boss", admin=True)
SEED_KEYS = {
    "assignment_created", "assignment_due_soon", "grade_posted", "friend_request",
    "group_invitation", "achievement_unlocked", "study_goal_milestone", "new_message",
    "system_announcement",
}


async def put(client: httpx.AsyncClient, key: str, headers: dict[str, str] = ADMIN,
              **body: Any) -> httpx.Response:
    body.setdefault("type", "course_update")
    body.setdefault("title", "Update in {course}")
    return await client.put(f"/api/templates/{key}", json=body, headers=headers)


async def test_the_nine_seed_templates_are_listed_by_key(client):
    r = await client.get("/api/templates", headers=ADMIN)
    assert r.status_code == 200
    items = r.json()["items"]
    assert {t["key"] for t in items} == SEED_KEYS
    assert [t["key"] for t in items] == sorted(t["key"] for t in items)
    for item in items:
        assert set(item) == {"key", "type", "title", "body", "link", "locales", "grouped"}
        assert set(item["locales"]) == {"de"}  # the demo's second language
    grade = next(t for t in items if t["key"] == "grade_posted")
    assert grade["body"] == "Your grade for {assignment} is {grade}"
    assert grade["link"] == "/grades/{grade_id}"


async def test_api_key_can_list_templates(client):
    assert (await client.get("/api/templates", headers=SERVICE)).status_code == 200


async def test_plain_user_cannot_list_templates(client):
    r = await client.get("/api/templates", headers=auth("u1"))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"


async def test_listing_templates_without_credentials_is_401(client):
    assert (await client.get("/api/templates")).status_code == 401


async def test_put_creates_a_template_that_get_returns(client):
    r = await put(client, "course_update", body="{teacher} posted in {course}",
                  link="/courses/{course_id}")
    assert r.status_code == 200
    expected = {"key": "course_update", "type": "course_update",
                "title": "Update in {course}", "body": "{teacher} posted in {course}",
                "link": "/courses/{course_id}", "locales": {}, "grouped": None}
    assert r.json() == expected
    assert (await client.get("/api/templates/course_update", headers=ADMIN)).json() == expected
    listed = (await client.get("/api/templates", headers=ADMIN)).json()["items"]
    assert expected in listed and len(listed) == 10


async def test_put_replaces_an_existing_template(client):
    r = await put(client, "grade_posted", type="grade_posted", title="New grade",
                  body="{assignment}: {grade}")
    assert r.status_code == 200
    got = (await client.get("/api/templates/grade_posted", headers=ADMIN)).json()
    assert got == {"key": "grade_posted", "type": "grade_posted", "title": "New grade",
                   "body": "{assignment}: {grade}", "link": None, "locales": {},
                   "grouped": None}


async def test_replaced_template_is_used_for_new_notifications(client):
    await put(client, "grade_posted", type="grade_posted", title="Graded: {assignment}",
              body="{grade}")
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "u1", "type": "grade_posted", "template": "grade_posted",
        "data": {"assignment": "Essay 2", "grade": "A-"},
    })
    assert r.status_code == 201
    [item] = r.json()["items"]
    assert (item["title"], item["body"], item["link"]) == ("Graded: Essay 2", "A-", None)


async def test_getting_an_unknown_template_is_404(client):
    assert (await client.get("/api/templates/nope", headers=ADMIN)).status_code == 404


async def test_plain_user_cannot_put_template(client):
    r = await put(client, "course_update", headers=auth("u1"))
    assert r.status_code == 403
    assert (await client.get("/api/templates/course_update", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize("placeholder", [
    "{name.__class__}", "{0[0]}", "{x!r}", "{x:>99}", "{0}", "{}", "{data[secret]}", "{",
])
@pytest.mark.parametrize("field", ["title", "body", "link"])
async def test_template_placeholders_other_than_plain_names_are_422(client, field,
                                                                     placeholder):
    r = await put(client, "evil", **{field: f"Hi {placeholder}"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/templates/evil", headers=ADMIN)).status_code == 404


async def test_escaped_braces_are_allowed_in_templates(client):
    r = await put(client, "braces", title="Set {{x}} to {value}")
    assert r.status_code == 200


@pytest.mark.parametrize("key", ["Bad", "has%20space", "x" * 101])
async def test_bad_template_key_is_422(client, key):
    assert (await put(client, key)).status_code == 422


@pytest.mark.parametrize("body", [
    {"title": ""},
    {"type": ""},
    {"title": "x" * 201},
    {"extra": 1},
])
async def test_invalid_template_body_is_422(client, body):
    r = await put(client, "course_update", **body)
    assert r.status_code == 422
    assert r.json()["errors"]


async def test_template_without_title_is_422(client):
    r = await client.put("/api/templates/k", json={"type": "t"}, headers=ADMIN)
    assert r.status_code == 422


async def test_a_template_link_that_renders_an_unsafe_scheme_is_422(client):
    assert (await put(client, "go", link="{url}")).status_code == 200
    body = {"user_id": "u1", "type": "go", "template": "go",
            "data": {"teacher": "T", "course": "C", "url": "javascript:alert(1)"}}
    r = await client.post("/api/notifications", json=body, headers=ADMIN)
    assert r.status_code == 422
    assert "unsafe link" in str(r.json()["errors"])
    body["data"]["url"] = "https://example.com/c"
    r = await client.post("/api/notifications", json=body, headers=ADMIN)
    assert r.status_code == 201
    assert r.json()["items"][0]["link"] == "https://example.com/c"


# ---- localized templates (docs/api.md, "Localized templates") --------------------------

GERMAN = {"title": "Note für {assignment}", "body": "Note: {grade}", "link": None}


async def contact(client: httpx.AsyncClient, user: str, locale: str) -> None:
    r = await client.put(f"/api/users/{user}/contact", headers=SERVICE, json={"locale": locale})
    assert r.status_code == 200


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("type", "grade_posted")
    body.setdefault("template", "grade_posted")
    body.setdefault("data", {"assignment": "Essay", "grade": "B", "grade_id": 7})
    return await client.post("/api/notifications", headers=SERVICE, json=body)


async def test_a_recipients_locale_picks_the_variant_and_others_get_the_default(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade for {assignment}",
              body="{grade}", link="/grades/{grade_id}",
              locales={"de": GERMAN, "pt-BR": {"title": "Nota de {assignment}"}})
    await contact(client, "anna", "de-AT")      # falls back to de
    await contact(client, "joao", "PT-br")      # case-insensitive
    await contact(client, "zoe", "fr")          # no French: the default
    r = await create(client, user_ids=["anna", "joao", "zoe", "nobody"])
    assert r.status_code == 201
    by_user = {i["user_id"]: (i["title"], i["body"], i["link"]) for i in r.json()["items"]}
    assert by_user == {
        "anna": ("Note für Essay", "Note: B", "/grades/7"),  # link null: the template's
        "joao": ("Nota de Essay", "", "/grades/7"),
        "zoe": ("Grade for Essay", "B", "/grades/7"),
        "nobody": ("Grade for Essay", "B", "/grades/7"),
    }
    inbox = (await client.get("/api/notifications", headers=auth("anna"))).json()["items"]
    assert inbox[0]["title"] == "Note für Essay"


async def test_the_seed_templates_ship_in_german(client):
    await contact(client, "anna", "de")
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_id": "anna", "type": "friend_request", "template": "friend_request",
        "data": {"sender_name": "Ben"},
    })
    [item] = r.json()["items"]
    assert (item["title"], item["body"]) == (
        "Freundschaftsanfrage von Ben", "Ben möchte mit dir befreundet sein.")


async def test_an_inline_contact_locale_is_used_for_its_create(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade", locales={"de": GERMAN})
    r = await create(client, user_id="newcomer", contact={"locale": "de"})
    assert r.status_code == 201
    assert r.json()["items"][0]["title"] == "Note für Essay"
    stored = await client.get("/api/users/newcomer/contact", headers=SERVICE)
    assert stored.json()["locale"] == "de"


async def test_explicit_fields_win_over_a_variant(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade", locales={"de": GERMAN})
    await contact(client, "anna", "de")
    r = await create(client, user_id="anna", title="Custom")
    assert (r.json()["items"][0]["title"], r.json()["items"][0]["body"]) == ("Custom", "Note: B")


async def test_a_variant_missing_a_variable_refuses_the_create_and_stores_nothing(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade",
              locales={"de": {"title": "Note von {teacher}"}})
    await contact(client, "anna", "de")
    r = await create(client, user_ids=["anna", "zoe"])
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["data", "teacher"]
    for user in ("anna", "zoe"):
        inbox = await client.get("/api/notifications", headers=auth(user))
        assert inbox.json()["items"] == []


async def test_a_variant_link_that_renders_an_unsafe_scheme_is_422(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade",
              locales={"de": {"title": "Note", "link": "{url}"}})
    await contact(client, "anna", "de")
    r = await create(client, user_id="anna", data={"url": "javascript:alert(1)"})
    assert r.status_code == 422


@pytest.mark.parametrize("locales", [
    {"en_US": {"title": "x"}},                      # not a BCP 47 tag
    {"de": {"title": ""}},                          # empty title
    {"de": {"title": "x", "extra": 1}},             # unknown field
    {"de": {"title": "{x.__class__}"}},             # not a plain placeholder
    {"de": {"title": "x"}, "DE": {"title": "y"}},   # the same tag twice
    {f"a{chr(97 + i // 26)}{chr(97 + i % 26)}": {"title": "t"} for i in range(51)},  # 51
])
async def test_bad_locale_variants_are_422_and_change_nothing(client, locales):
    r = await put(client, "grade_posted", type="grade_posted", title="Changed", locales=locales)
    assert r.status_code == 422, r.text
    got = (await client.get("/api/templates/grade_posted", headers=ADMIN)).json()
    assert got["title"] == "Grade posted"


async def test_a_put_without_locales_removes_the_variants(client):
    await put(client, "grade_posted", type="grade_posted", title="G", locales={"de": GERMAN})
    got = (await client.get("/api/templates/grade_posted", headers=ADMIN)).json()
    assert got["locales"] == {"de": GERMAN}
    await put(client, "grade_posted", type="grade_posted", title="G")
    got = (await client.get("/api/templates/grade_posted", headers=ADMIN)).json()
    assert got["locales"] == {}


async def test_a_template_carries_a_grouped_variant(client):
    grouped = {"title": "{actor} and {others} others posted in {course}", "body": "{count}"}
    r = await put(client, "course_update", grouped=grouped)
    assert r.status_code == 200 and r.json()["grouped"] == grouped
    seeded = (await client.get("/api/templates/new_message", headers=ADMIN)).json()
    assert seeded["grouped"] == {"title": "{count} new messages from {sender_id}"}
    for bad in ({"title": "{x.y}"}, {"title": ""}, {"body": "no title"},
                {"title": "ok", "body": "{0}"}):
        r = await put(client, "course_update", grouped=bad)
        assert r.status_code == 422, bad
    got = (await client.get("/api/templates/course_update", headers=ADMIN)).json()
    assert got["grouped"] == grouped


# ---- localized grouped templates (docs/api.md, "Grouped templates") ---------------------


async def befriend(client: httpx.AsyncClient, users: list[str], who: str | None) -> list[Any]:
    r = await client.post("/api/notifications", headers=SERVICE, json={
        "user_ids": users, "type": "friend_request", "template": "friend_request",
        "data": {"sender_name": who or "a classmate"}, "collapse_key": "friends",
        **({"actor": who} if who else {})})
    assert r.status_code == 201, r.text
    return sorted(r.json()["items"], key=lambda i: i["user_id"])


async def test_a_group_takes_the_grouped_text_of_its_recipients_locale(client):
    seeded = (await client.get("/api/templates/friend_request", headers=ADMIN)).json()
    assert seeded["locales"]["de"]["grouped"] == {
        "title": "{actor} und {others} weitere haben dir Freundschaftsanfragen geschickt",
        "someone": "Jemand"}
    await contact(client, "anna", "de-AT")
    for who in ("Ada", "Bob", "Cy"):
        anna, zoe = await befriend(client, ["anna", "zoe"], who)
    assert anna["title"] == "Cy und 2 weitere haben dir Freundschaftsanfragen geschickt"
    assert anna["body"] == "Cy möchte mit dir befreundet sein."
    assert zoe["title"] == "Cy and 2 others sent you friend requests"
    # Without any actor, "someone" in each language.
    for _ in range(2):
        ben, yan = await befriend(client, ["ben", "yan"], None)
    await contact(client, "ben", "de")
    for _ in range(2):
        ben, yan = await befriend(client, ["ben", "yan"], None)
    assert ben["group_count"] == 4 and ben["actors"] == []
    assert ben["title"] == "Jemand und 3 weitere haben dir Freundschaftsanfragen geschickt"
    assert yan["title"] == "Someone and 3 others sent you friend requests"


async def test_a_variant_without_grouped_text_titles_its_groups_in_its_own_language(client):
    r = await put(client, "grade_posted", type="grade_posted", title="Grade for {assignment}",
                  grouped={"title": "{count} grades", "someone": "A teacher"},
                  locales={"de": {**GERMAN, "grouped": {"title": "{actor}: {count} Noten",
                                                        "body": "{others} mehr"}},
                           "pt-BR": {"title": "Nota de {assignment}"}})
    assert r.status_code == 200, r.text
    assert r.json()["locales"]["de"]["grouped"] == {"title": "{actor}: {count} Noten",
                                                    "body": "{others} mehr"}
    assert "grouped" not in r.json()["locales"]["pt-BR"]
    await contact(client, "anna", "de")
    await contact(client, "joao", "pt-BR")
    for _ in range(2):
        r = await create(client, user_ids=["anna", "joao", "zoe"], collapse_key="grades")
    by_user = {i["user_id"]: (i["title"], i["body"]) for i in r.json()["items"]}
    assert by_user == {
        "anna": ("Someone: 2 Noten", "1 mehr"),  # the German text has no "someone"
        "joao": ("Nota de Essay (2)", ""),
        "zoe": ("2 grades", ""),
    }


@pytest.mark.parametrize("grouped", [
    {"title": "{x.y}"}, {"title": ""}, {"title": "ok", "body": "{0}"},
    {"title": "ok", "someone": ""}, {"title": "ok", "extra": 1},
])
async def test_a_bad_grouped_text_in_a_variant_is_422_and_changes_nothing(client, grouped):
    r = await put(client, "grade_posted", type="grade_posted", title="Changed",
                  locales={"de": {**GERMAN, "grouped": grouped}})
    assert r.status_code == 422, r.text
    got = (await client.get("/api/templates/grade_posted", headers=ADMIN)).json()
    assert got["title"] == "Grade posted"


async def test_a_german_variants_grouped_text_missing_a_variable_refuses_the_create(client):
    await put(client, "grade_posted", type="grade_posted", title="Grade",
              locales={"de": {**GERMAN, "grouped": {"title": "{count} von {teacher}"}}})
    await contact(client, "anna", "de")
    r = await create(client, user_ids=["anna", "zoe"], collapse_key="grades")
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["data", "teacher"]
