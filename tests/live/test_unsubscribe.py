"""One-click unsubscribe (RFC 8058) on a live hub: the link of a real email turns that
type's email off; a GET changes nothing; a forged token is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hub.channels import Delivery
from hub.channels.email import EmailChannel
from hub.settings import Settings
from hub.unsubscribe import UnsubscribeLinks
from tests.conftest import SECRET, auth
from tests.live.conftest import LiveHub
from tests.smtp import Recorder, smtp_server

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


def links(secret: str = SECRET) -> UnsubscribeLinks:
    return UnsubscribeLinks(Settings(jwt_secret=secret, public_url="https://hub.example.com"))


def path_of(url: str) -> str:
    return url.removeprefix("https://hub.example.com")


async def prefs(hub: LiveHub, user: str) -> dict[str, Any]:
    response = await hub.http.get("/api/notifications/preferences", headers=auth(user))
    assert response.status_code == 200
    return response.json()


async def emailed_link(hub: LiveHub, tmp_path: Path, user: str, type_: str) -> str:
    """The List-Unsubscribe URL of an email the channel sent through a real SMTP server."""
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(Settings(
            jwt_secret=SECRET, data_dir=tmp_path / "data", smtp_url=f"smtp://127.0.0.1:{port}",
            email_from="hub@example.com", public_url=hub.url))
        notification = {"id": 1, "user_id": user, "type": type_, "title": "Hi", "body": "",
                        "link": None, "data": {}}
        await asyncio.wait_for(channel.send(Delivery(
            id=1, channel="email", attempt=1, notification=notification,
            contact={"email": "ann@school.example"})), 10)
    header = recorder.messages[0].message["List-Unsubscribe"]
    assert header.startswith(f"<{hub.url}/api/unsubscribe?token=")
    return header[1:-1]


async def test_the_one_click_post_of_an_emailed_link_turns_that_types_email_off(hub, tmp_path):
    patched = await hub.http.patch("/api/notifications/preferences", headers=auth("ann"),
                                   json={"channels": {"push": True},
                                         "types": {"grade_posted": {"in_app": True}}})
    assert patched.status_code == 200
    url = await emailed_link(hub, tmp_path, "ann", "grade_posted")

    response = await hub.http.post(url, **ONE_CLICK)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    after = await prefs(hub, "ann")
    assert after["types"]["grade_posted"] == {"in_app": True, "email": False}
    assert after["channels"] == patched.json()["channels"]  # the rest stays
    assert after["channels"]["email"] is True
    assert (await prefs(hub, "bob"))["types"] == {}
    # Clicking again (a mail client retrying) is fine and changes nothing more.
    again = await hub.http.post(url, **ONE_CLICK)
    assert again.status_code == 200 and await prefs(hub, "ann") == after


async def test_a_user_id_of_any_shape_unsubscribes_the_right_user(hub):
    user = "auth0|ann+tag@example.com/ü 100%"
    response = await hub.http.post(path_of(links().url(user, "new_message")), **ONE_CLICK)
    assert response.status_code == 200
    assert (await prefs(hub, user))["types"] == {"new_message": {"email": False}}


async def test_a_get_shows_a_confirmation_form_and_changes_nothing(hub):
    url = path_of(links().url("ann", "grade_posted"))
    response = await hub.http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in response.headers
    page = response.text
    assert '<form method="post" action="unsubscribe?token=' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert "grade_posted" in page
    assert (await prefs(hub, "ann"))["types"] == {}
    # The form's action, resolved against the page, is the one-click POST.
    action = page.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    posted = await hub.http.post("/api/" + action, data={"List-Unsubscribe": "One-Click"})
    assert posted.status_code == 200
    assert (await prefs(hub, "ann"))["types"] == {"grade_posted": {"email": False}}


def _forged() -> list[str]:
    good = links().token("ann", "grade_posted")
    version, payload, signature = good.split(".")
    bob = links().token("bob", "grade_posted").split(".")[1]
    return [
        f"{version}.{bob}.{signature}",  # another user with ann's signature
        links("another-secret-0123456789-abcdefghijklmnop").token("ann", "grade_posted"),
        f"{version}.{payload}.{signature[:-2]}",
        f"u0.{payload}.{signature}",
        "garbage", "", "a.b.c", "x" * 5000,
    ]


@pytest.mark.parametrize("token", _forged())
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_forged_or_malformed_token_is_422_problem_json_and_changes_nothing(
    hub, token, method
):
    response = await hub.http.request(method, "/api/unsubscribe", params={"token": token},
                                      **(ONE_CLICK if method == "POST" else {}))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:notifyhub:problem:invalid_input"
    assert (await prefs(hub, "ann"))["types"] == {}
    assert (await prefs(hub, "bob"))["types"] == {}


async def test_no_token_is_422(hub):
    for method in ("GET", "POST"):
        response = await hub.http.request(method, "/api/unsubscribe")
        assert response.status_code == 422


async def test_a_large_body_is_413_and_changes_nothing(hub):
    url = path_of(links().url("ann", "grade_posted"))
    response = await hub.http.post(url, content=b"x" * 5000)
    assert response.status_code == 413
    assert (await prefs(hub, "ann"))["types"] == {}
