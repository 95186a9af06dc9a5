"""Quiet hours (docs/delivery.md, "Quiet hours"): email, push and SMS deliveries decided
inside the user's quiet hours are ``held`` until the window ends, in the user's time
zone; in-app and webhooks are never held; ``high`` priority may bypass them.

The hub, its workers and PostgreSQL are real; the channels are
``tests.hub.recording_channel.Recorder``. Windows are computed around the real "now" in
a chosen time zone; the release is driven by moving the stored row's
``next_attempt_at`` to now, never by sleeping until the window ends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from db import deliveries as store
from hub import delivery, preferences
from hub.models import Preferences
from tests.conftest import SERVICE, auth
from tests.hub.recording_channel import Recorder
from tests.hub.test_delivery import create, deliveries_of, hub
from tests.waiting import eventually


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> dict[str, Recorder]:
    """This test's delivery channels, by name: all recorders."""
    recs = {name: Recorder(name=name) for name in ("email", "sms", "webhook")}
    monkeypatch.setattr(delivery, "REGISTRY", recs)
    return recs


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


def window_around_now(zone: str, before: timedelta, after: timedelta) -> tuple[str, str]:
    """``(start, end)`` as HH:MM in ``zone``: from ``before`` ago to ``after`` from now."""
    here = datetime.now(ZoneInfo(zone))
    return _hhmm(here - before), _hhmm(here + after)


def next_end(end: str, zone: str, now: datetime | None = None) -> datetime:
    """The next moment after ``now`` at which ``zone``'s wall clock shows ``end`` (zoneinfo:
    the oracle the SQL computation is checked against)."""
    tz = ZoneInfo(zone)
    here = (now or datetime.now(UTC)).astimezone(tz)
    hour, minute = map(int, end.split(":"))
    at = here.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= here:
        at = (here + timedelta(days=1)).replace(hour=hour, minute=minute, second=0,
                                                 microsecond=0)
    return at.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)


def zone_where_it_is(hour: int) -> str:
    """A fixed-offset zone (``Etc/GMT±N``) whose wall clock now shows ``hour``."""
    offset = (hour - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    # Etc/GMT-5 is UTC+5 (POSIX sign).
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def set_quiet(app: Any, user: str, start: str, end: str, zone: str = "UTC",
                    **extra: Any) -> None:
    doc = {"quiet_hours": {"start": start, "end": end, "timezone": zone}, **extra}
    await preferences.put(app.state.services, user, Preferences.load(doc))


async def set_contact(app: Any, user: str, **contact: Any) -> None:
    contact.setdefault("email", f"{user}@example.com")
    r = await app.state.client.put(f"/api/users/{user}/contact", json=contact,
                                   headers=SERVICE)
    assert r.status_code == 200, r.text


def by_channel(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["channel"]: d for d in rows}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


async def release_now(app: Any, notification_id: int) -> None:
    """Make the held rows of one notification due now (as if their window had ended)."""
    await app.state.services.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() WHERE notification_id = $1 "
        "AND state = 'held'", notification_id)


async def test_an_email_inside_quiet_hours_is_held_until_the_window_ends_then_sent(
    settings_env, channels
):
    zone = "Asia/Kolkata"  # UTC+05:30: half-hour offsets too
    async with hub(settings_env, delivery_workers=0) as app:
        start, end = window_around_now(zone, timedelta(hours=1), timedelta(hours=2))
        await set_quiet(app, "ann", start, end, zone)
        await set_contact(app, "ann")
        made = await create(app, user_id="ann")
        n = made["items"][0]["id"]
        [row] = await deliveries_of(app, n)
        assert (row["channel"], row["state"], row["attempts"]) == ("email", "held", 0)
        assert at(row["next_attempt_at"]) == next_end(end, zone)
    async with hub(settings_env) as app:  # workers on: a held row is not sent early
        other = await create(app, user_id="ann", title="Second")
        await release_now(app, n)
        sent = await eventually(lambda: [d for d in channels["email"].sent
                                         if d.notification["id"] == n])
        assert sent[0].attempt == 1
        # The worker records the outcome after the send returned.
        [row] = await eventually(lambda: _recorded(app, n))
        assert row["state"] == "sent" and row["sent_at"] is not None
        # The other one, created in the window too, is still held: never sent early.
        assert [d["state"] for d in await deliveries_of(app, other["items"][0]["id"])] == [
            "held"
        ]
        assert all(d.notification["id"] != other["items"][0]["id"]
                   for d in channels["email"].attempts)


async def _recorded(app: Any, notification_id: int) -> list[Any]:
    """The deliveries of a notification once none is awaiting its outcome any more."""
    rows = await deliveries_of(app, notification_id)
    return [] if any(r["state"] == "scheduled" for r in rows) else rows


async def _states(app: Any, notification_id: int) -> list[str]:
    return [d["state"] for d in await deliveries_of(app, notification_id)]


async def test_outside_quiet_hours_a_delivery_is_scheduled_at_once(settings_env, channels):
    zone = "America/New_York"
    async with hub(settings_env, delivery_workers=0) as app:
        start, end = window_around_now(zone, -timedelta(hours=1), timedelta(hours=3))
        await set_quiet(app, "ann", start, end, zone)
        await set_contact(app, "ann")
        made = await create(app, user_id="ann")
        [row] = await deliveries_of(app, made["items"][0]["id"])
        assert row["state"] == "scheduled"
        assert at(row["next_attempt_at"]) <= datetime.now(UTC)


@pytest.mark.parametrize("hour", [23, 0], ids=["evening-part", "morning-part"])
async def test_a_window_across_midnight_holds_until_its_end_on_the_right_day(
    settings_env, channels, hour
):
    zone = zone_where_it_is(hour)  # the wall clock there shows 23:xx or 00:xx now
    async with hub(settings_env, delivery_workers=0) as app:
        start, end = window_around_now(zone, timedelta(minutes=70), timedelta(minutes=70))
        assert start > end  # e.g. 22:10-00:30 or 23:10-01:30: spans midnight
        await set_quiet(app, "ann", start, end, zone)
        await set_contact(app, "ann")
        made = await create(app, user_id="ann")
        [row] = await deliveries_of(app, made["items"][0]["id"])
        assert row["state"] == "held"
        until = at(row["next_attempt_at"])
        assert until == next_end(end, zone)
        assert timedelta(minutes=60) < until - datetime.now(UTC) < timedelta(minutes=71)


async def test_the_contacts_time_zone_wins_over_the_quiet_hours_own(settings_env, channels):
    zone = "Pacific/Auckland"
    async with hub(settings_env, delivery_workers=0) as app:
        start, end = window_around_now(zone, timedelta(hours=1), timedelta(hours=1))
        # Saved as UTC wall-clock times, but the contact says the user lives in Auckland.
        await set_quiet(app, "ann", start, end, "UTC")
        await set_contact(app, "ann", time_zone=zone)
        made = await create(app, user_id="ann")
        [row] = await deliveries_of(app, made["items"][0]["id"])
        assert row["state"] == "held"
        assert at(row["next_attempt_at"]) == next_end(end, zone)


async def test_without_a_contact_time_zone_the_quiet_hours_own_zone_is_used(
    settings_env, channels
):
    zone = "Asia/Tokyo"
    async with hub(settings_env, delivery_workers=0) as app:
        start, end = window_around_now(zone, timedelta(hours=1), timedelta(hours=1))
        await set_quiet(app, "ann", start, end, zone)
        await set_contact(app, "ann")  # no time_zone
        made = await create(app, user_id="ann")
        [row] = await deliveries_of(app, made["items"][0]["id"])
        assert row["state"] == "held"
        assert at(row["next_attempt_at"]) == next_end(end, zone)


async def test_in_app_and_webhook_are_never_held_while_email_and_sms_are(
    settings_env, channels
):
    zone = "Europe/Berlin"
    async with hub(settings_env) as app:
        start, end = window_around_now(zone, timedelta(hours=1), timedelta(hours=1))
        await set_quiet(app, "ann", start, end, zone,
                        channels={"email": True, "sms": True, "webhook": True})
        await set_contact(app, "ann", phone="+14155550123")
        made = await create(app, user_id="ann", title="Now")
        n = made["items"][0]["id"]
        # In-app: in the inbox at once.
        r = await app.state.client.get("/api/notifications", headers=auth("ann"))
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [n]
        # The webhook goes out at once; the email waits for the window's end.
        await eventually(lambda: channels["webhook"].sent)
        rows = by_channel(await eventually(lambda: _when_webhook_sent(app, n)))
        assert rows["email"]["state"] == "held" and rows["sms"]["state"] == "held"
        assert channels["email"].attempts == [] and channels["sms"].attempts == []


async def _when_webhook_sent(app: Any, n: int) -> list[dict[str, Any]] | None:
    rows = await deliveries_of(app, n)
    return rows if by_channel(rows)["webhook"]["state"] == "sent" else None


@pytest.mark.parametrize("bypass, expected", [(True, "scheduled"), (False, "held")])
async def test_high_priority_bypasses_quiet_hours_as_the_setting_says(
    settings_env, channels, bypass, expected
):
    zone = "Europe/Lisbon"
    async with hub(settings_env, delivery_workers=0,
                   quiet_hours_bypass_high=bypass) as app:
        start, end = window_around_now(zone, timedelta(hours=1), timedelta(hours=1))
        await set_quiet(app, "ann", start, end, zone)
        await set_contact(app, "ann")
        high = await create(app, user_id="ann", priority="high")
        normal = await create(app, user_id="ann", priority="normal")
        assert await _states(app, high["items"][0]["id"]) == [expected]
        assert await _states(app, normal["items"][0]["id"]) == ["held"]


# --- the window's end across DST changes: the real decide statement at a chosen moment


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize("moment, start, end, until", [
    # Spring forward (2026-03-29 02:00 CET -> 03:00 CEST): 07:00 next morning is CEST.
    ("2026-03-28T23:00:00+01:00", "22:00", "07:00", "2026-03-29T07:00:00+02:00"),
    # Fall back (2026-10-25 03:00 CEST -> 02:00 CET): 07:00 next morning is CET.
    ("2026-10-24T23:00:00+02:00", "22:00", "07:00", "2026-10-25T07:00:00+01:00"),
    # Inside the repeated hour of the fall-back night (the second 02:30, CET).
    ("2026-10-25T02:30:00+01:00", "22:00", "07:00", "2026-10-25T07:00:00+01:00"),
    # An end the spring-forward night skips (02:30 never happens): 03:30 CEST, the
    # moment 02:30 CET would have been.
    ("2026-03-29T01:00:00+01:00", "22:00", "02:30", "2026-03-29T03:30:00+02:00"),
    # A plain day window, and its end the same day.
    ("2026-07-01T13:00:00+02:00", "12:00", "14:00", "2026-07-01T14:00:00+02:00"),
])
async def test_the_window_end_is_the_wall_clock_end_across_dst_changes(
    settings_env, channels, moment, start, end, until
):
    async with hub(settings_env, delivery_workers=0) as app:
        await set_contact(app, "ann")
        made = await create(app, user_id="ann")
        n = made["items"][0]["id"]
        pool = app.state.services.pool
        await pool.execute("DELETE FROM deliveries WHERE notification_id = $1", n)
        async with pool.acquire() as conn:
            await store.decide(conn, [(n, "ann", "email", start, end, BERLIN, 0.0, None)],
                               at=datetime.fromisoformat(moment))
        [row] = await deliveries_of(app, n)
        assert row["state"] == "held"
        assert at(row["next_attempt_at"]) == datetime.fromisoformat(until)
        assert at(row["next_attempt_at"]) == next_end(end, BERLIN,
                                                       datetime.fromisoformat(moment)) \
            or end == "02:30"  # zoneinfo's fold=0 reads a skipped 02:30 as CET too


@pytest.mark.parametrize("moment", [
    "2026-03-29T07:00:00+02:00",  # the end itself: the window is over
    "2026-03-29T21:59:00+02:00",  # just before it starts again
])
async def test_outside_the_window_at_its_edges_nothing_is_held(
    settings_env, channels, moment
):
    async with hub(settings_env, delivery_workers=0) as app:
        await set_contact(app, "ann")
        made = await create(app, user_id="ann")
        n = made["items"][0]["id"]
        pool = app.state.services.pool
        await pool.execute("DELETE FROM deliveries WHERE notification_id = $1", n)
        async with pool.acquire() as conn:
            await store.decide(conn, [(n, "ann", "email", "22:00", "07:00", BERLIN, 0.0, None)],
                               at=datetime.fromisoformat(moment))
        assert await _states(app, n) == ["scheduled"]


async def test_held_rows_are_claimed_through_the_due_index_not_a_table_scan(
    settings_env, channels
):
    # The claim runs every poll of every worker, and sent rows stay for the retention
    # period: it must find due held rows through an index (migration 0005).
    async with hub(settings_env, delivery_workers=0) as app:
        async with app.state.services.pool.acquire() as conn:
            await conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + store.Q.claim, ["email"], 10, 5.0))
            await conn.execute("RESET enable_seqscan")
        assert "Index Scan using deliveries_due_idx" in plan, plan
        assert "Seq Scan on deliveries" not in plan, plan
