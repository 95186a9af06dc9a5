"""Digests, as decided (docs/delivery.md, "Digests"): a user with a digest gets their
emails written ``digest`` with the end of their period, and one digest job per user and
period; other channels are unchanged; a digest job already claimed takes no more; a
changed setting sends the pending digest at once.

The hub and PostgreSQL are real; the channels are ``tests.hub.recording_channel``
recorders (the building and sending of digests is tested against a real SMTP server in
``tests/live/test_digest_email.py``). Periods are computed for explicit moments
(``db.deliveries.decide(..., at=...)``), never by waiting for a clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from db import deliveries as store
from hub import delivery, preferences
from hub.channels.email_templates import render_digest
from hub.models import Preferences
from hub.settings import Settings, SettingsError, load_settings
from hub.unsubscribe import UnsubscribeLinks, unsubscribe
from tests.conftest import SERVICE, auth
from tests.hub.recording_channel import Recorder
from tests.hub.test_delivery import create, deliveries_of, hub


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> dict[str, Recorder]:
    """This test's delivery channels, by name: all recorders."""
    recs = {name: Recorder(name=name) for name in ("email", "sms", "webhook")}
    monkeypatch.setattr(delivery, "REGISTRY", recs)
    return recs


async def set_contact(app: Any, user: str, **contact: Any) -> None:
    contact.setdefault("email", f"{user}@example.com")
    r = await app.state.client.put(f"/api/users/{user}/contact", json=contact,
                                   headers=SERVICE)
    assert r.status_code == 200, r.text


async def rows_of(app: Any, user: str) -> list[dict[str, Any]]:
    """Every delivery of ``user``, digest jobs included, by channel (``email`` first)."""
    return [dict(r) for r in await app.state.services.pool.fetch(
        "SELECT id, notification_id, channel, state, attempts, next_attempt_at, digest_at,"
        " last_error FROM deliveries WHERE user_id = $1 ORDER BY channel, id", user)]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def decided(app: Any, digest: str, moment: str, *, zone: str | None = None,
                  quiet: tuple[str, str] | None = None, hour: int = 8, weekday: int = 1,
                  ) -> list[dict[str, Any]]:
    """The rows ``decide`` writes for one email of ``ann`` with ``digest``, due at
    ``moment`` (the contact's time zone ``zone``, quiet hours ``quiet``)."""
    await set_contact(app, "ann", **({"time_zone": zone} if zone else {}))
    made = await create(app, user_id="ann")
    n = made["items"][0]["id"]
    pool = app.state.services.pool
    await pool.execute("DELETE FROM deliveries WHERE user_id = 'ann'")
    start, end = quiet or (None, None)
    async with pool.acquire() as conn:
        await store.decide(conn, [(n, "ann", "email", start, end, None, 0.0, digest)],
                           at=at(moment), digest_hour=hour, digest_weekday=weekday)
    return await rows_of(app, "ann")


@pytest.mark.parametrize(("digest", "moment", "zone", "end"), [
    # Hourly: the next full hour of the user's wall clock.
    ("hourly", "2026-01-05T10:20:00+00:00", None, "2026-01-05T11:00:00+00:00"),
    ("hourly", "2026-01-05T10:00:00+00:00", None, "2026-01-05T11:00:00+00:00"),
    # India is UTC+05:30: its full hours are at :30 UTC.
    ("hourly", "2026-01-05T10:20:00+00:00", "Asia/Kolkata", "2026-01-05T10:30:00+00:00"),
    # An end the spring-forward night skips (02:00 CET) is 03:00 CEST, the same moment.
    ("hourly", "2026-03-29T01:30:00+01:00", "Europe/Paris", "2026-03-29T03:00:00+02:00"),
    # The fall-back night's repeated hour (02:xx summer, then winter time) is one period.
    ("hourly", "2026-10-25T02:30:00+02:00", "Europe/Paris", "2026-10-25T03:00:00+01:00"),
    ("hourly", "2026-10-25T02:30:00+01:00", "Europe/Paris", "2026-10-25T03:00:00+01:00"),
    # Daily: the next 08:00 there, strictly after the moment.
    ("daily", "2026-01-05T07:59:00+01:00", "Europe/Paris", "2026-01-05T08:00:00+01:00"),
    ("daily", "2026-01-05T08:00:00+01:00", "Europe/Paris", "2026-01-06T08:00:00+01:00"),
    ("daily", "2026-01-05T23:30:00-05:00", "America/New_York", "2026-01-06T08:00:00-05:00"),
    # Across the spring-forward night: 08:00 local, now summer time.
    ("daily", "2026-03-28T10:00:00+01:00", "Europe/Paris", "2026-03-29T08:00:00+02:00"),
    # Weekly: the next Monday 08:00 (2026-01-05 is a Monday).
    ("weekly", "2026-01-07T12:00:00+01:00", "Europe/Paris", "2026-01-12T08:00:00+01:00"),
    ("weekly", "2026-01-05T07:00:00+01:00", "Europe/Paris", "2026-01-05T08:00:00+01:00"),
    ("weekly", "2026-01-05T08:00:00+01:00", "Europe/Paris", "2026-01-12T08:00:00+01:00"),
    ("weekly", "2026-01-11T23:59:00+01:00", "Europe/Paris", "2026-01-12T08:00:00+01:00"),
])
async def test_an_email_waits_for_the_end_of_its_period_on_the_users_wall_clock(
    settings_env, channels, digest, moment, zone, end
):
    async with hub(settings_env, delivery_workers=0) as app:
        rows = await decided(app, digest, moment, zone=zone)
        member, job = rows[0], rows[1]
        assert (member["channel"], member["state"]) == ("email", "digest")
        assert member["digest_at"] == member["next_attempt_at"] == at(end)
        assert (job["channel"], job["state"], job["notification_id"]) == (
            "email.digest", "held", None)
        assert job["digest_at"] == job["next_attempt_at"] == at(end)


async def test_daily_and_weekly_periods_follow_the_digest_hour_and_weekday(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0) as app:
        # HUB_DIGEST_HOUR=18, HUB_DIGEST_WEEKDAY=friday (ISO 5), on a Wednesday.
        rows = await decided(app, "weekly", "2026-01-07T12:00:00+00:00", hour=18, weekday=5)
        assert rows[0]["digest_at"] == at("2026-01-09T18:00:00+00:00")
        rows = await decided(app, "daily", "2026-01-07T18:30:00+00:00", hour=18)
        assert rows[0]["digest_at"] == at("2026-01-08T18:00:00+00:00")


async def test_a_period_ending_inside_quiet_hours_ends_when_they_end(settings_env, channels):
    async with hub(settings_env, delivery_workers=0) as app:
        rows = await decided(app, "hourly", "2026-01-05T23:10:00+01:00", zone="Europe/Paris",
                             quiet=("22:00", "07:00"))
        assert rows[0]["digest_at"] == rows[1]["digest_at"] == at("2026-01-06T07:00:00+01:00")
        # One ending at the window's end is not moved.
        rows = await decided(app, "hourly", "2026-01-06T06:10:00+01:00", zone="Europe/Paris",
                             quiet=("22:00", "07:00"))
        assert rows[0]["digest_at"] == at("2026-01-06T07:00:00+01:00")


async def test_a_digest_user_gets_no_email_at_once_and_other_channels_are_unchanged(
    settings_env, channels
):
    async with hub(settings_env) as app:
        svc = app.state.services
        await set_contact(app, "ann", phone="+14155550123")
        await set_contact(app, "bob")
        await preferences.put(svc, "ann", Preferences.load(
            {"digest": "hourly", "channels": {"sms": True, "webhook": True}}))
        made = await create(app, user_ids=["ann", "bob"], priority="high")
        ann, bob = (i["id"] for i in made["items"])
        more = await create(app, user_id="ann", type="friend_request", title="Hi")
        # bob (no digest) is emailed; ann's sms and webhook go out at once too.
        await asyncio.wait_for(_until(lambda: len(channels["email"].sent) == 1
                                      and len(channels["sms"].sent) == 2
                                      and len(channels["webhook"].sent) == 2), 10)
        await asyncio.sleep(0.5)  # a few polls: ann's email still waits
        assert [d.notification["id"] for d in channels["email"].sent] == [bob]
        by_channel = {d["channel"]: d for d in await deliveries_of(app, ann)}
        assert by_channel["email"]["state"] == "digest"
        assert by_channel["sms"]["state"] == "sent"
        # Both of ann's emails wait for one digest job, and priority high waits too.
        rows = await rows_of(app, "ann")
        jobs = [r for r in rows if r["channel"] == "email.digest"]
        emails = [r for r in rows if r["channel"] == "email"]
        assert len(jobs) == 1 and jobs[0]["state"] == "held"
        assert {r["notification_id"] for r in emails} == {ann, more["items"][0]["id"]}
        assert {r["digest_at"] for r in emails} == {jobs[0]["digest_at"]}


async def test_a_digest_already_claimed_takes_no_more_the_email_goes_alone(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await set_contact(app, "ann")
        await preferences.put(svc, "ann", Preferences.load({"digest": "hourly"}))
        first = (await create(app, user_id="ann"))["items"][0]["id"]
        [job] = [r for r in await rows_of(app, "ann") if r["channel"] == "email.digest"]
        # A worker claimed the job (its build has begun) before this commit.
        await svc.pool.execute("UPDATE deliveries SET state = 'scheduled', attempts = 1 "
                               "WHERE id = $1", job["id"])
        later = (await create(app, user_id="ann"))["items"][0]["id"]
        states = {r["notification_id"]: (r["state"], r["digest_at"])
                  for r in await rows_of(app, "ann") if r["channel"] == "email"}
        assert states[first] == ("digest", job["digest_at"])
        assert states[later] == ("scheduled", None)


async def test_changing_the_digest_makes_the_pending_one_due_at_once(settings_env, channels):
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await set_contact(app, "ann")
        r = await app.state.client.patch("/api/notifications/preferences",
                                         json={"digest": "daily"}, headers=auth("ann"))
        assert r.status_code == 200
        made = (await create(app, user_id="ann"))["items"][0]["id"]
        [job] = [r for r in await rows_of(app, "ann") if r["channel"] == "email.digest"]
        now = await svc.pool.fetchval("SELECT now()")
        assert job["next_attempt_at"] > now
        r = await app.state.client.patch("/api/notifications/preferences",
                                         json={"digest": "off"}, headers=auth("ann"))
        assert r.status_code == 200
        rows = {r["channel"]: r for r in await rows_of(app, "ann")}
        assert rows["email.digest"]["state"] == "held"
        assert rows["email.digest"]["next_attempt_at"] <= await svc.pool.fetchval("SELECT now()")
        assert rows["email"]["next_attempt_at"] == rows["email.digest"]["next_attempt_at"]
        # From now on, one email each, at once.
        later = (await create(app, user_id="ann"))["items"][0]["id"]
        [d] = await deliveries_of(app, later)
        assert d["state"] == "scheduled" and made != later


async def _digest(app: Any, user: str, value: str) -> None:
    r = await app.state.client.patch("/api/notifications/preferences",
                                     json={"digest": value}, headers=auth(user))
    assert r.status_code == 200, r.text


async def test_after_a_flush_the_rest_of_the_period_starts_a_new_digest(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0) as app:
        await set_contact(app, "ann")
        await _digest(app, "ann", "daily")
        first = (await create(app, user_id="ann"))["items"][0]["id"]
        await _digest(app, "ann", "off")    # flushes the period's job: due at once
        await _digest(app, "ann", "daily")  # the same period again
        later = (await create(app, user_id="ann"))["items"][0]["id"]
        rows = await rows_of(app, "ann")
        emails = {r["notification_id"]: r for r in rows if r["channel"] == "email"}
        jobs = [r for r in rows if r["channel"] == "email.digest"]
        # In a new job of its own, not sent on its own at once nor added to the flushed one.
        assert emails[later]["state"] == emails[first]["state"] == "digest"
        assert len(jobs) == 2 and all(j["state"] == "held" for j in jobs)
        assert emails[first]["digest_at"] != emails[later]["digest_at"]
        assert {j["digest_at"] for j in jobs} == {emails[first]["digest_at"],
                                                 emails[later]["digest_at"]}


async def test_after_an_unsubscribe_turning_email_on_again_digests_again(
    settings_env, channels
):
    async with hub(settings_env, delivery_workers=0) as app:
        await set_contact(app, "ann")
        await _digest(app, "ann", "daily")
        await create(app, user_id="ann")
        await unsubscribe(app.state.services, "ann", None)
        r = await app.state.client.patch("/api/notifications/preferences",
                                         json={"channels": {"email": True}}, headers=auth("ann"))
        assert r.status_code == 200
        later = (await create(app, user_id="ann"))["items"][0]["id"]
        [d] = await deliveries_of(app, later)
        assert d["state"] == "digest"


async def _until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.02)


def test_a_long_digest_lists_its_newest_titles_and_counts_the_rest():
    items = [{"id": 100 - k, "type": "grade_posted", "title": f"Grade {100 - k}", "link": None}
             for k in range(50)]
    rendered = render_digest(
        75, [("grade_posted", 60), ("new_comment", 5)], items, links={},
        unsubscribe_url="https://hub.example.com/api/unsubscribe?token=t&x=<y>",
        preferences_url="https://hub.example.com/#prefs")
    assert rendered.subject == "Your digest: 75 unread notifications"
    text = rendered.text
    assert "Grade posted (60)" in text and "- and 10 more" in text
    assert "New comment (5)" in text and "- and 5 more" in text
    assert "and 10 more of other types" in text
    assert text.index("Grade 100") < text.index("Grade 51")
    assert "https://hub.example.com/api/unsubscribe?token=t&amp;x=&lt;y&gt;" in rendered.html


@pytest.mark.parametrize(("locale", "subject"), [
    ("de", "Deine Zusammenfassung: 1 ungelesene Benachrichtigung"),
    ("DE-ch", "Deine Zusammenfassung: 1 ungelesene Benachrichtigung"),
    ("en-GB", "Your digest: 1 unread notification"),
    ("pt-BR", "Your digest: 1 unread notification"),
    (None, "Your digest: 1 unread notification"),
])
def test_a_digests_language_follows_the_locale_and_falls_back_to_english(locale, subject):
    rendered = render_digest(
        1, [("like", 1)], [{"id": 1, "type": "like", "title": "", "link": None}],
        links={}, unsubscribe_url="https://u.example/x",
        preferences_url="https://u.example/#prefs", locale=locale)
    assert rendered.subject == subject
    # A type without a heading of its own is named after itself in every language.
    assert "Like (1)" in rendered.text
    assert ("(ohne Titel)" if subject.startswith("Deine") else "(no title)") in rendered.text


def test_a_long_german_digest_counts_the_rest_in_german():
    items = [{"id": k, "type": "grade_posted", "title": f"Note {k}", "link": None}
             for k in range(3)]
    text = render_digest(9, [("grade_posted", 5)], items, links={},
                         unsubscribe_url="https://u.example/x",
                         preferences_url="https://u.example/#prefs", locale="de").text
    assert "Noten (5)" in text and "- und 2 weitere" in text
    assert "und 4 weitere anderer Arten" in text


def test_an_all_email_unsubscribe_token_round_trips_and_differs_from_a_types():
    links = UnsubscribeLinks(Settings(jwt_secret="s" * 32,
                                      public_url="https://hub.example.com"))
    assert links.verify(links.token("ann", None)) == ("ann", None)
    assert links.verify(links.token("ann", "grade_posted")) == ("ann", "grade_posted")
    assert links.token("ann", None) != links.token("ann", "grade_posted")


def test_the_digest_settings_are_checked_and_the_weekday_read_in_any_case():
    assert Settings(digest_weekday="Friday").digest_weekday == "friday"
    assert Settings().digest_hour == 8 and Settings().digest_weekday == "monday"
    for bad in ({"digest_hour": 24}, {"digest_weekday": "someday"}):
        with pytest.raises(SettingsError, match="HUB_DIGEST_"):
            load_settings(**bad)
