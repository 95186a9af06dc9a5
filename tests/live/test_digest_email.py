"""Digests end to end (docs/delivery.md, "Digests"): hubs on real sockets, their delivery
workers, real PostgreSQL and a real SMTP server (aiosmtpd on loopback).

A period's end is not waited for: the test moves the digest job's due time
(``next_attempt_at``, a database value) to now, as the end of the period would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.unsubscribe import UnsubscribeLinks
from tests.conftest import SERVICE, auth
from tests.live.conftest import LiveHub, live_hub
from tests.live.test_email_delivery import T, email_settings
from tests.smtp import Recorder, smtp_server
from tests.waiting import eventually


async def setup(hub: LiveHub, user: str, digest: str = "hourly") -> None:
    r = await hub.http.put(f"/api/users/{user}/contact", headers=SERVICE,
                           json={"email": f"{user}@school.example"})
    assert r.status_code == 200, r.text
    r = await hub.http.patch("/api/notifications/preferences", headers=auth(user),
                             json={"digest": digest})
    assert r.status_code == 200, r.text


async def notify(hub: LiveHub, user: str, type_: str, title: str, **extra: Any) -> int:
    r = await hub.http.post("/api/notifications", headers=SERVICE,
                            json={"user_id": user, "type": type_, "title": title, **extra})
    assert r.status_code == 201, r.text
    return int(r.json()["items"][0]["id"])


async def email_of(hub: LiveHub, notification_id: int) -> dict[str, Any]:
    r = await hub.http.get(f"/api/notifications/{notification_id}/deliveries",
                           headers=SERVICE)
    assert r.status_code == 200, r.text
    [email] = [d for d in r.json()["items"] if d["channel"] == "email"]
    return dict(email)


async def job_of(hub: LiveHub, user: str) -> dict[str, Any]:
    row = await hub.svc.pool.fetchrow(
        "SELECT state, attempts, last_error FROM deliveries "
        "WHERE user_id = $1 AND channel = 'email.digest'", user)
    return dict(row)


async def end_period(hub: LiveHub, *users: str) -> None:
    """The end of the users' current period: their digest jobs are due now."""
    await hub.svc.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() "
        "WHERE user_id = ANY($1::text[]) AND channel = 'email.digest' AND state = 'held'",
        list(users))


async def test_an_hourly_digest_is_one_email_of_the_unread_grouped_by_type(settings_env):
    recorder = Recorder()
    async with smtp_server(recorder) as port, \
            live_hub(**email_settings(settings_env, port)) as hub:
        await setup(hub, "ann")
        g1 = await notify(hub, "ann", "grade_posted", "Grade for Essay 1", link="/grades/1")
        read = await notify(hub, "ann", "grade_posted", "Grade for Essay 2")
        g3 = await notify(hub, "ann", "grade_posted", "<b>Grade</b> & Essay 3")
        f1 = await notify(hub, "ann", "friend_request", "Bob sent you a request",
                          link="https://friends.example/r?a=1&b=2")
        r = await hub.http.post("/api/notifications/mark-read", headers=auth("ann"),
                                json={"ids": [read]})
        assert r.status_code == 200, r.text
        await asyncio.sleep(1.0)  # several worker polls: nothing is emailed one by one
        assert recorder.messages == []
        waiting = await email_of(hub, g1)
        assert waiting["state"] == "digest" and waiting["attempts"] == 0

        await end_period(hub, "ann")
        await asyncio.wait_for(recorder.arrived.wait(), T)
        await eventually(lambda: _settled(hub, g1), timeout=T)
        await asyncio.sleep(0.5)  # nothing more arrives
        [got] = recorder.messages
        assert got.rcpt_tos == ["ann@school.example"]
        msg = got.message
        assert msg["Subject"] == "Your digest: 3 unread notifications"
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["Message-ID"].startswith("<digest-")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Auto-Submitted"] == "auto-generated"

        text = msg.get_body(("plain",)).get_content()
        assert "Grade posted (2)" in text and "Friend request (1)" in text
        assert "Grade for Essay 2" not in text  # read before the digest was built
        # Grouped by type, the newest type first, each type's titles newest first.
        assert text.index("Friend request (1)") < text.index("Grade posted (2)") \
            < text.index("<b>Grade</b> & Essay 3") < text.index("Grade for Essay 1")
        assert "https://hub.example.com/grades/1" in text
        html = msg.get_body(("html",)).get_content()
        assert "&lt;b&gt;Grade&lt;/b&gt; &amp; Essay 3" in html and "<b>Grade</b>" not in html
        assert 'href="https://hub.example.com/grades/1"' in html
        assert 'href="https://friends.example/r?a=1&amp;b=2"' in html
        assert 'href="https://hub.example.com/#prefs"' in html

        assert (await email_of(hub, g3))["state"] == "sent"
        assert (await email_of(hub, f1))["state"] == "sent"
        skipped = await email_of(hub, read)
        assert (skipped["state"], skipped["last_error"]) == ("skipped", "read in-app")
        assert (await job_of(hub, "ann"))["state"] == "sent"

        # The one-click link of a digest turns all email off, and the next digest with it.
        link = msg["List-Unsubscribe"][1:-1].removeprefix("https://hub.example.com")
        response = await hub.http.post(link, content=b"List-Unsubscribe=One-Click",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})
        assert response.status_code == 200
        prefs = (await hub.http.get("/api/notifications/preferences",
                                    headers=auth("ann"))).json()
        assert prefs["channels"]["email"] is False and prefs["digest"] == "hourly"


async def test_a_digest_is_written_in_the_language_of_the_contacts_locale(settings_env):
    """A contact whose ``locale`` is German (``de-AT`` falls back to ``de``) gets the
    digest's own texts in German, its titles from the templates' German variants; a
    locale without digest texts (``fr``) gets English."""
    recorder = Recorder()
    async with smtp_server(recorder) as port, \
            live_hub(**email_settings(settings_env, port)) as hub:
        for user, locale in (("ann", "de-AT"), ("bob", "fr")):
            await setup(hub, user)
            r = await hub.http.put(f"/api/users/{user}/contact", headers=SERVICE,
                                   json={"email": f"{user}@school.example", "locale": locale})
            assert r.status_code == 200, r.text
            for template, data in (
                ("grade_posted", {"assignment": "Essay", "grade": "A", "grade_id": 1}),
                ("grade_posted", {"assignment": "Essay", "grade": "B", "grade_id": 2}),
                ("system_announcement", {"title": "Schulfest", "message": "Am Freitag"}),
            ):
                r = await hub.http.post("/api/notifications", headers=SERVICE, json={
                    "user_id": user, "type": template, "template": template, "data": data})
                assert r.status_code == 201, r.text
        await end_period(hub, "ann", "bob")
        await eventually(lambda: len(recorder.messages) == 2 or None, timeout=T)
        by_user = {m.rcpt_tos[0].split("@")[0]: m.message for m in recorder.messages}

        german = by_user["ann"]
        assert german["Subject"] == "Deine Zusammenfassung: 3 ungelesene Benachrichtigungen"
        assert german.get_content_type() == "multipart/alternative"
        text = german.get_body(("plain",)).get_content()
        assert text.startswith("Du hast 3 ungelesene Benachrichtigungen aus diesem Zeitraum.")
        assert text.index("Ankündigungen (1)") < text.index("Noten (2)")
        assert "- Note eingetragen" in text  # the template's German title
        assert "Alle Benachrichtigungs-E-Mails abbestellen: https://hub.example.com/api/" \
            "unsubscribe?token=" in text
        assert "Benachrichtigungseinstellungen: https://hub.example.com/#prefs" in text
        assert "unread" not in text and "Unsubscribe" not in text
        html = german.get_body(("html",)).get_content()
        assert '<html lang="de">' in html
        assert "Noten (2)" in html and "Ankündigungen (1)" in html
        assert ">Benachrichtigungseinstellungen</a>" in html
        assert german["List-Unsubscribe"].startswith("<https://hub.example.com/api/unsubscribe")

        english = by_user["bob"]
        assert english["Subject"] == "Your digest: 3 unread notifications"
        text = english.get_body(("plain",)).get_content()
        assert "Grade posted (2)" in text and "System announcement (1)" in text
        assert '<html lang="en">' in english.get_body(("html",)).get_content()


async def _settled(hub: LiveHub, notification_id: int) -> bool:
    return (await email_of(hub, notification_id))["state"] == "sent"


async def test_a_period_whose_notifications_were_all_read_sends_nothing(settings_env):
    recorder = Recorder()
    async with smtp_server(recorder) as port, \
            live_hub(**email_settings(settings_env, port)) as hub:
        await setup(hub, "ann", "daily")
        ids = [await notify(hub, "ann", "grade_posted", f"Grade {n}") for n in range(3)]
        r = await hub.http.post("/api/notifications/mark-all-read", headers=auth("ann"),
                                json={})
        assert r.status_code == 200, r.text
        await end_period(hub, "ann")
        job = await eventually(
            lambda: _finished(hub, "ann"), timeout=T)
        assert (job["state"], job["last_error"], job["attempts"]) == (
            "skipped", "nothing unread", 1)
        await asyncio.sleep(0.5)
        assert recorder.messages == []
        for n in ids:
            email = await email_of(hub, n)
            assert (email["state"], email["last_error"]) == ("skipped", "read in-app")


async def _finished(hub: LiveHub, user: str) -> dict[str, Any] | None:
    job = await job_of(hub, user)
    return job if job["state"] not in ("held", "scheduled") else None


async def test_two_instances_send_each_users_digest_exactly_once(settings_env):
    recorder = Recorder()
    users = [f"u{n}" for n in range(12)]
    async with smtp_server(recorder) as port:
        settings = email_settings(settings_env, port)
        async with live_hub(**settings) as one, live_hub(**settings) as two:
            for n, user in enumerate(users):
                hub = (one, two)[n % 2]
                await setup(hub, user)
                for k in range(3):
                    await notify(hub, user, "grade_posted", f"Grade {k} of {user}")
            await end_period(one, *users)
            await eventually(lambda: len(recorder.messages) >= len(users), timeout=T)
            for user in users:
                await eventually(lambda u=user: _finished(one, u), timeout=T)
            await asyncio.sleep(1.0)  # both instances poll again: nothing more
            recipients = sorted(r for m in recorder.messages for r in m.rcpt_tos)
            assert recipients == sorted(f"{u}@school.example" for u in users)
            for m in recorder.messages:
                assert m.message["Subject"] == "Your digest: 3 unread notifications"
            counts = await one.svc.pool.fetch(
                "SELECT state, attempts, count(*) AS n FROM deliveries "
                "WHERE channel = 'email.digest' GROUP BY state, attempts")
            assert [tuple(r) for r in counts] == [("sent", 1, len(users))]


async def test_turning_the_digest_off_sends_the_pending_one_at_once(settings_env):
    recorder = Recorder()
    async with smtp_server(recorder) as port, \
            live_hub(**email_settings(settings_env, port)) as hub:
        await setup(hub, "ann", "weekly")
        await notify(hub, "ann", "grade_posted", "Waiting for the week")
        await asyncio.sleep(0.5)
        assert recorder.messages == []
        r = await hub.http.patch("/api/notifications/preferences", headers=auth("ann"),
                                 json={"digest": "off"})
        assert r.status_code == 200
        await asyncio.wait_for(recorder.arrived.wait(), T)  # no clock moved
        assert recorder.messages[0].message["Subject"] == "Your digest: 1 unread notification"
        await notify(hub, "ann", "friend_request", "Now one by one")
        await eventually(lambda: len(recorder.messages) == 2 or None, timeout=T)
        assert recorder.messages[1].message["Subject"] == "Now one by one"


async def test_unsubscribing_from_all_email_cancels_the_pending_digest(settings_env):
    recorder = Recorder()
    async with smtp_server(recorder) as port, \
            live_hub(**email_settings(settings_env, port)) as hub:
        await setup(hub, "ann", "daily")
        r = await hub.http.patch("/api/notifications/preferences", headers=auth("ann"),
                                 json={"types": {"grade_posted": {"email": True},
                                                 "friend_request": {"email": False}}})
        assert r.status_code == 200, r.text
        n = await notify(hub, "ann", "grade_posted", "Pending in the digest")
        link = UnsubscribeLinks(hub.svc.settings).url("ann", None)
        path = link.removeprefix("https://hub.example.com")
        page = await hub.http.get(path)
        assert page.status_code == 200 and "all notification emails" in page.text
        assert (await job_of(hub, "ann"))["state"] == "held"  # a GET changes nothing
        response = await hub.http.post(path, content=b"List-Unsubscribe=One-Click",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})
        assert response.status_code == 200
        prefs = (await hub.http.get("/api/notifications/preferences",
                                    headers=auth("ann"))).json()
        assert prefs["channels"]["email"] is False
        assert prefs["types"] == {"grade_posted": {"email": False},
                                  "friend_request": {"email": False}}
        job = await job_of(hub, "ann")
        assert (job["state"], job["last_error"]) == ("skipped", "unsubscribed")
        email = await email_of(hub, n)
        assert (email["state"], email["last_error"]) == ("skipped", "unsubscribed")
        await end_period(hub, "ann")
        await asyncio.sleep(0.5)
        assert recorder.messages == []
