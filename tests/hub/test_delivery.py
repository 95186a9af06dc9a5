"""Durable delivery jobs (docs/delivery.md): decided at commit, claimed, retried, taken over.

The channel is ``tests.hub.recording_channel.Recorder``, a real implementation of the
channel protocol registered through ``hub.delivery.REGISTRY``; the hub, its workers and
PostgreSQL are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from db import deliveries as store
from hub import delivery, notifications, preferences
from hub.models import NotificationCreate, Preferences
from tests.conftest import SERVICE, running_app
from tests.hub.conftest import statements
from tests.hub.recording_channel import Recorder
from tests.waiting import eventually

FAST = {
    "delivery_backoff_seconds": 0.05,
    "delivery_backoff_max_seconds": 0.2,
    "delivery_poll_seconds": 0.1,
}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The only delivery channel of this test's hubs, as ``email``."""
    rec = Recorder()
    monkeypatch.setattr(delivery, "REGISTRY", {"email": rec})
    return rec


@asynccontextmanager
async def hub(settings_env: dict[str, Any], **overrides: Any) -> AsyncIterator[Any]:
    """A running hub (its lifespan entered) and an HTTP client bound to it."""
    async with running_app(**{**settings_env, **FAST, **overrides}) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            app.state.client = client
            yield app


async def create(app: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "grade_posted")
    body.setdefault("title", "Grade posted")
    r = await app.state.client.post("/api/notifications", json=body, headers=SERVICE)
    assert r.status_code == 201, r.text
    return r.json()


async def with_emails(app: Any, *users: str) -> None:
    """Give each of ``users`` the contact email ``<user>@example.com``."""
    for user in users:
        r = await app.state.client.put(f"/api/users/{user}/contact",
                                       json={"email": f"{user}@example.com"}, headers=SERVICE)
        assert r.status_code == 200, r.text


async def deliveries_of(app: Any, notification_id: int) -> list[dict[str, Any]]:
    r = await app.state.client.get(
        f"/api/notifications/{notification_id}/deliveries", headers=SERVICE
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def state_of(app: Any, notification_id: int) -> dict[str, Any] | None:
    items = await deliveries_of(app, notification_id)
    return items[0] if items else None


async def test_deliveries_are_decided_at_commit_by_preferences_and_address(
    settings_env, recorder
):
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await with_emails(app, "ann", "cid", "dee")
        await preferences.put(svc, "cid", Preferences.load({"channels": {"email": False}}))
        await preferences.put(svc, "dee", Preferences.load(
            {"types": {"grade_posted": {"email": False}}}
        ))
        made = await create(app, user_ids=["ann", "bob", "cid", "dee"])
        by_user = {i["user_id"]: i["id"] for i in made["items"]}
        rows = {u: await deliveries_of(app, i) for u, i in by_user.items()}
        assert [(d["channel"], d["state"], d["attempts"]) for d in rows["ann"]] == [
            ("email", "scheduled", 0)
        ]
        assert rows["bob"] == []  # no address
        assert rows["cid"] == []  # email off
        assert rows["dee"] == []  # email off for this type
        other = await create(app, user_id="dee", type="friend_request", title="Hi")
        assert [d["channel"] for d in await deliveries_of(app, other["items"][0]["id"])] == [
            "email"
        ]


async def test_nothing_is_scheduled_on_a_channel_that_is_not_configured(
    settings_env, monkeypatch
):
    monkeypatch.setattr(delivery, "REGISTRY", {"email": Recorder(), "sms": _Off()})
    async with hub(settings_env, delivery_workers=0) as app:
        await app.state.client.put(
            "/api/users/ann/contact", json={"email": "a@example.com", "phone": "+14155550123"},
            headers=SERVICE,
        )
        await preferences.put(app.state.services, "ann",
                              Preferences.load({"channels": {"sms": True}}))
        made = await create(app, user_id="ann")
        assert [d["channel"] for d in await deliveries_of(app, made["items"][0]["id"])] == [
            "email"
        ]


class _Off(Recorder):
    def configured(self, settings: Any) -> bool:
        return False


async def test_a_committed_notification_is_sent_with_its_notification_and_contact(
    settings_env, recorder
):
    async with hub(settings_env) as app:
        made = await create(app, user_id="ann", title="Your grade",
                            contact={"email": "ann@example.com", "locale": "fr"})
        n = made["items"][0]
        await eventually(lambda: recorder.sent)
        [sent] = recorder.sent
        assert sent.channel == "email" and sent.attempt == 1
        assert sent.notification["id"] == n["id"]
        assert sent.notification["title"] == "Your grade"
        assert sent.contact == {"email": "ann@example.com", "locale": "fr"}
        state = await eventually(lambda: _sent(app, n["id"]))
        assert state["attempts"] == 1 and state["sent_at"] is not None
        assert state["last_error"] is None


async def _sent(app: Any, notification_id: int) -> dict[str, Any] | None:
    state = await state_of(app, notification_id)
    return state if state and state["state"] in ("sent", "failed") else None


async def test_temporary_failures_are_retried_with_backoff_until_sent(settings_env, recorder):
    recorder.fail_times = 2
    async with hub(settings_env) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        state = await eventually(lambda: _sent(app, made["items"][0]["id"]))
        assert state["state"] == "sent" and state["attempts"] == 3
        assert [d.attempt for d in recorder.attempts] == [1, 2, 3]
        assert len({d.id for d in recorder.attempts}) == 1  # one delivery id throughout


async def test_a_delivery_fails_after_the_last_attempt_with_the_error(settings_env, recorder):
    recorder.fail_times = 100
    async with hub(settings_env, delivery_max_attempts=3) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        state = await eventually(lambda: _sent(app, made["items"][0]["id"]))
        assert state["state"] == "failed" and state["attempts"] == 3
        assert state["last_error"] == "try 3 refused (after 3 attempts)"
        await asyncio.sleep(0.5)  # several polls: no fourth attempt
        assert len(recorder.attempts) == 3


async def test_a_permanent_refusal_fails_at_once_with_its_reason(settings_env, recorder):
    recorder.permanent = "550 no such mailbox"
    async with hub(settings_env) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        state = await eventually(lambda: _sent(app, made["items"][0]["id"]))
        assert state["state"] == "failed" and state["attempts"] == 1
        assert state["last_error"] == "550 no such mailbox"
        await asyncio.sleep(0.5)
        assert len(recorder.attempts) == 1


async def test_a_crashed_workers_claim_is_taken_over_after_its_lease(settings_env, recorder):
    async with hub(settings_env, delivery_workers=0) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        # A worker claims the row and dies without recording anything.
        [claimed] = await store.claim(app.state.services.pool, ["email"], 10, 1.5)
        assert claimed["attempts"] == 1
    async with hub(settings_env) as app:
        state = await eventually(lambda: _sent(app, made["items"][0]["id"]))
        assert state["state"] == "sent" and state["attempts"] == 2
        assert [d.attempt for d in recorder.attempts] == [2]


async def test_two_hubs_never_send_the_same_attempt_twice(settings_env, recorder):
    recorder.delay = 0.005
    async with hub(settings_env) as one, hub(settings_env) as two:
        users = [f"u{k}" for k in range(120)]
        await with_emails(one, *users)
        # Both hubs create, so both workers are woken; they race for the same rows.
        await asyncio.gather(
            create(one, user_ids=users[:60]), create(two, user_ids=users[60:]),
            create(one, user_ids=users[:60], type="friend_request"),
            create(two, user_ids=users[60:], type="friend_request"),
        )
        await eventually(lambda: len(recorder.sent) >= 240, timeout=30)
        await asyncio.sleep(0.3)
        ids = [d.id for d in recorder.attempts]
        assert len(ids) == len(set(ids)) == 240
        count = await one.state.services.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE state = 'sent' AND attempts = 1"
        )
        assert count == 240


async def test_delivery_metrics_count_outcomes_and_the_queue(settings_env, recorder, monkeypatch):
    monkeypatch.setattr(delivery, "QUEUE_COUNT_SECONDS", 0.1)  # 30 s between counts
    recorder.fail_times = 1
    async with hub(settings_env, delivery_backoff_seconds=0.05) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        await eventually(lambda: _sent(app, made["items"][0]["id"]))

        async def metrics() -> str:
            return (await app.state.client.get("/metrics")).text

        text = await metrics()
        assert 'notifyhub_deliveries_total{channel="email",outcome="retried"} 1.0' in text
        assert 'notifyhub_deliveries_total{channel="email",outcome="sent"} 1.0' in text
    recorder.fail_times = 100
    async with hub(settings_env, delivery_backoff_seconds=600,
                   delivery_backoff_max_seconds=600) as app:
        await create(app, user_id="ann")
        await eventually(lambda: len(recorder.attempts) == 3)  # retried in 5-10 min

        async def queued() -> bool:
            text = (await app.state.client.get("/metrics")).text
            return 'notifyhub_delivery_queue{channel="email"} 1.0' in text

        await eventually(queued)


async def test_an_error_text_with_nul_is_recorded_and_attempts_still_end(settings_env, recorder):
    # PostgreSQL text cannot hold NUL: unrecorded outcomes re-sent the row at every lease.
    recorder.fail_times, recorder.failure = 100, "bad\x00answer {n}"
    async with hub(settings_env, delivery_max_attempts=2, delivery_lease_seconds=2) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        state = await eventually(lambda: _sent(app, made["items"][0]["id"]), 20)
        assert state["state"] == "failed"
        assert state["last_error"] == "bad\ufffdanswer 2 (after 2 attempts)"
        assert len(recorder.attempts) == 2


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter():
    assert delivery.backoff(1, 10, 3600, rand=lambda: 0.0) == 5.0
    assert delivery.backoff(1, 10, 3600, rand=lambda: 1.0) == 10.0
    assert delivery.backoff(4, 10, 3600, rand=lambda: 1.0) == 80.0
    assert delivery.backoff(30, 10, 3600, rand=lambda: 1.0) == 3600.0
    assert delivery.backoff(1000, 10, 3600, rand=lambda: 0.0) == 1800.0


async def test_a_receivers_retry_after_lengthens_the_backoff(settings_env, monkeypatch):
    class AskLater(Recorder):
        def make(self, svc: Any) -> Any:
            return _AskLater(self)

    class _AskLater:
        name = "email"

        def __init__(self, rec: Recorder) -> None:
            self.rec = rec

        async def send(self, delivery: Any) -> None:
            self.rec.attempts.append(delivery)
            exc = RuntimeError("503 busy")
            exc.retry_after = 600.0  # type: ignore[attr-defined]
            raise exc

        async def close(self) -> None:
            return None

    rec = AskLater()
    monkeypatch.setattr(delivery, "REGISTRY", {"email": rec})
    async with hub(settings_env) as app:
        made = await create(app, user_id="ann", contact={"email": "ann@example.com"})
        await eventually(lambda: rec.attempts)
        await asyncio.sleep(0.3)  # past the 0.05-0.2 s backoff: no second attempt
        assert len(rec.attempts) == 1
        wait = await app.state.services.pool.fetchval(
            "SELECT extract(epoch FROM next_attempt_at - updated_at) FROM deliveries "
            "WHERE notification_id = $1", made["items"][0]["id"])
        assert 599 <= wait <= 601


async def _create_in(conn: Any, requests: list[NotificationCreate],
                     channels: tuple[str, ...]) -> tuple[list[Any], list[str]]:
    """``create_many_in`` in a transaction of its own on ``conn``: its results and the
    statements the batch sent."""
    async with statements(conn) as sent, conn.transaction():
        results = await notifications.create_many_in(conn, requests, channels=channels)
    return list(results), sent


async def test_deciding_deliveries_adds_no_statement_to_a_create_batch(settings_env, recorder):
    """The deliveries are decided by the statement that stores the batch's rows and
    appends their events, so a batch with email deliveries costs as many round trips as
    one without channels."""
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await with_emails(app, "ann", "bob")
        batch = [NotificationCreate(user_ids=["ann", "bob"], type="grade_posted", title="A"),
                 NotificationCreate(user_id="ann", type="friend_request", title="B")]
        async with svc.pool.acquire() as conn:
            for _ in range(2):  # the second time, asyncpg knows every type it meets
                _, plain = await _create_in(conn, batch, ())
                results, deciding = await _create_in(conn, batch, ("email",))
        assert len(deciding) == len(plain)
        assert not any("deliveries_decide" in q for q in plain)
        assert [q for q in deciding if "deliveries_decide" in q] == [
            q for q in deciding if "user_events" in q
        ]
        for item in [i for r in results for i in r.items]:
            assert [(d["channel"], d["state"]) for d in await deliveries_of(app, item["id"])] \
                == [("email", "scheduled")]


async def test_a_keyed_batch_written_alone_claims_decides_and_appends_in_one_statement(
    settings_env, recorder
):
    """Without a transaction, the one statement claims the keys, stores the rows,
    decides their deliveries (a digest user's included) and logs their events."""
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await with_emails(app, "ann", "bob")
        await preferences.put(svc, "bob", Preferences.load({"digest": "daily"}))
        async with svc.pool.acquire() as conn:
            for n in range(2):  # the second time, asyncpg knows every type it meets
                async with statements(conn) as sent:
                    results = await notifications.create_many_in(conn, [
                        NotificationCreate(user_ids=["ann", "bob"], type="grade_posted",
                                           title="A", idempotency_key=f"k-{n}"),
                    ], channels=("email",), alone=True)
        assert len(sent) == 2 and "deliveries_decide" in sent[1]
        assert "notification_requests" in sent[1] and "user_events" in sent[1]
        by_user = {i["user_id"]: i for i in results[0].items}
        assert [(d["channel"], d["state"]) for d in await deliveries_of(
            app, by_user["ann"]["id"])] == [("email", "scheduled")]
        assert len(await deliveries_of(app, by_user["bob"]["id"])) == 1  # its digest


async def test_a_batch_that_joins_a_group_still_decides_its_new_notifications(
    settings_env, recorder
):
    """A batch joining an open group locks counters before its events are appended: its
    deliveries are then decided by a statement of their own, before that."""
    async with hub(settings_env, delivery_workers=0) as app:
        svc = app.state.services
        await with_emails(app, "ann", "bob")
        await preferences.put(svc, "bob", Preferences.load({"digest": "daily"}))
        like = {"type": "like", "title": "Ada liked it", "collapse_key": "post:1"}
        async with svc.pool.acquire() as conn:
            [first], _ = await _create_in(conn, [NotificationCreate(user_id="ann", **like)],
                                          ("email",))
            results, sent = await _create_in(conn, [
                NotificationCreate(user_id="ann", **like),
                NotificationCreate(user_id="bob", type="grade_posted", title="B"),
            ], ("email",))
        assert results[0].grouped and results[0].items[0]["id"] == first.items[0]["id"]
        decide_at = next(n for n, q in enumerate(sent) if "deliveries_decide" in q)
        assert decide_at < next(n for n, q in enumerate(sent) if "user_counters" in q)
        [bobs] = results[1].items
        assert [(d["channel"], d["state"]) for d in await deliveries_of(app, bobs["id"])] \
            == [("email", "digest")]
        # The joined group was decided when it started, and only then.
        assert [d["channel"] for d in await deliveries_of(app, first.items[0]["id"])] == [
            "email"
        ]
