"""hub.messages without HTTP: what is published, metrics, races and fallbacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from db.errors import ClaimTaken
from hub import messages
from hub.errors import Conflict, InvalidInput, NotFound
from hub.models import MessageSend
from hub.services import Services
from tests.hub.conftest import listening_services, statements

TIMEOUT = 10


class Published:
    """Everything the broker was handed, per channel, decoded."""

    def __init__(self) -> None:
        self.frames: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, channel: str, seq: int | None, message: bytes) -> None:
        self.frames.setdefault(channel, []).append(orjson.loads(message))

    def of(self, user: str) -> list[dict[str, Any]]:
        return self.frames.get(f"user:{user}", [])


@pytest.fixture
async def published() -> Published:
    return Published()


@pytest.fixture
async def svc(database_url: str, tmp_path: Any, published: Published) -> AsyncIterator[Services]:
    """Services on this test's database with an in-memory broker listening to u1..u3."""
    async with listening_services(database_url, tmp_path, published, ["u1", "u2", "u3"]) as svc:
        yield svc


def msg(recipient: str, body: str = "hi", client_id: str | None = None) -> MessageSend:
    return MessageSend(recipient_id=recipient, body=body, client_id=client_id)


async def send(svc: Services, sender: str, body: MessageSend) -> tuple[dict[str, Any], bool]:
    return await asyncio.wait_for(messages.send(svc, sender, body), TIMEOUT)


def metric(svc: Services, name: str) -> float:
    value = svc.metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_send_publishes_the_committed_events_to_both_parties(
    svc: Services, published: Published
) -> None:
    message, created = await send(svc, "u1", msg("u2", "hello"))
    assert created
    wire = orjson.loads(orjson.dumps(message, option=orjson.OPT_UTC_Z))
    assert published.of("u1") == [{"type": "message.created", "seq": 1, "data": wire}]
    to_recipient = published.of("u2")
    assert [(f["type"], f["seq"]) for f in to_recipient] == [
        ("message.created", 1), ("notification.created", 2)
    ]
    assert to_recipient[0]["data"] == wire
    assert to_recipient[1]["data"]["data"]["message_id"] == message["id"]
    assert wire["created_at"].endswith("Z")


async def test_a_replayed_send_publishes_and_counts_nothing(
    svc: Services, published: Published
) -> None:
    first, _ = await send(svc, "u1", msg("u2", client_id="c-1"))
    again, created = await send(svc, "u1", msg("u2", client_id="c-1"))
    assert (again, created) == (first, False)
    assert len(published.of("u1")) == 1
    assert metric(svc, "notifyhub_messages_sent_total") == 1
    assert metric(svc, "notifyhub_notifications_created_total") == 1


async def test_five_concurrent_sends_with_one_client_id_create_one_message(
    svc: Services,
) -> None:
    results = await asyncio.gather(*(send(svc, "u1", msg("u2", "x", "race")) for _ in range(5)))
    assert sorted(created for _, created in results) == [False] * 4 + [True]
    assert len({m["id"] for m, _ in results}) == 1
    assert metric(svc, "notifyhub_messages_sent_total") == 1


async def test_concurrent_sends_commit_together_with_gapless_seqs_in_send_order(
    svc: Services, published: Published
) -> None:
    pairs = [("u1", "u2"), ("u2", "u3"), ("u3", "u1")] * 10
    results = await asyncio.gather(
        *(send(svc, a, msg(b, f"m{n}")) for n, (a, b) in enumerate(pairs))
    )
    assert all(created for _, created in results)
    assert metric(svc, "notifyhub_messages_sent_total") == 30
    assert svc.writers["messages"].batches < 30  # sends shared transactions
    for user in ("u1", "u2", "u3"):
        frames = published.of(user)
        # 10 sent + 10 received messages, and a notification per received one.
        assert [f["seq"] for f in frames] == list(range(1, 31))
        bodies = [f["data"]["body"] for f in frames if f["type"] == "message.created"]
        assert bodies == sorted(bodies, key=lambda b: int(b[1:]))


async def test_a_send_stores_its_message_notification_and_events_in_three_statements(
    svc: Services, published: Published
) -> None:
    """Ids come with the message insert, and the messages' events are logged by the
    statement that stores the notification and logs its event."""
    async with svc.pool.acquire() as conn:
        for n in range(2):  # the second time, asyncpg knows every type it meets
            async with statements(conn) as sent, conn.transaction():
                [result] = await messages.send_many_in(conn, [("u1", msg("u2", f"m{n}"))])
    assert isinstance(result, messages.Sent) and result.created
    assert [(e[0], e[2]) for e in result.events] == [
        ("u1", "message.created"), ("u2", "message.created"), ("u2", "notification.created"),
    ]
    assert [e[1] for e in result.events if e[0] == "u2"] == [3, 4]  # after the first send's
    assert len(sent) == 3
    assert "user_events" in sent[-1] and "INSERT INTO notifications" in sent[-1]


async def test_a_send_batch_writes_in_one_statement_without_a_transaction_of_its_own(
    database_url: str, tmp_path: Any
) -> None:
    """What the notifications read comes with the messages' ids and time, then one
    statement stores the messages and notifications and logs every event: no BEGIN
    and COMMIT. A used client_id, or a template that fails (its fixed wording is
    another write), makes the batch again in a transaction."""
    sent: list[str] = []
    frames = Published()
    async with listening_services(database_url, tmp_path, frames, ["u1", "u2"],
                                  connections=1) as svc:
        async with svc.pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(lambda record: sent.append(record.query))
        await svc.pool.execute(
            "INSERT INTO preferences (user_id, prefs) VALUES ('muted', $1)", {"muted": True})

        async def run(recipient: str, body: str, client_id: str | None) -> tuple[Any, list[str]]:
            sent.clear()
            made = await send(svc, "u1", msg(recipient, body, client_id))
            await asyncio.sleep(0)  # asyncpg calls the loggers soon after, not at once
            return made, list(sent)

        for client_id in (None, "c-0"):  # teach asyncpg the types first
            await run("u2", "warm", client_id)
        (fresh, _), alone = await run("u2", "one", "c-1")
        again, replayed = await run("u2", "one", "c-1")
        (quiet, _), suppressed = await run("muted", "two", None)
        await svc.pool.execute("UPDATE templates SET body = '{missing}' WHERE key = 'new_message'")
        (_, created), broken = await run("u2", "three", None)
        stored = await svc.pool.fetchrow(
            "SELECT id, created_at, client_id FROM direct_messages WHERE id = $1", fresh["id"])
        muted_events = await svc.pool.fetchval(
            "SELECT count(*) FROM user_events WHERE user_id = 'muted'")
        to_muted = await svc.pool.fetchval(
            "SELECT count(*) FROM direct_messages WHERE recipient_id = 'muted'")
        fixed = await svc.pool.fetch(
            "SELECT n.title FROM direct_messages m JOIN notifications n"
            " ON (n.data->>'message_id')::bigint = m.id WHERE m.body = 'three'")
    for ran in (alone, suppressed):
        assert len(ran) == 2 and "BEGIN;" not in ran
        assert "direct_messages_id_seq" in ran[0]
        assert all(table in ran[1]
                   for table in ("INSERT INTO direct_messages", "INSERT INTO notifications",
                                 "user_events"))
    # Stored as answered and published: created_at is the time the batch read.
    assert dict(stored) == {"id": fresh["id"], "created_at": fresh["created_at"],
                            "client_id": "c-1"}
    assert frames.of("u2")[-2]["data"]["body"] == "three"
    assert again == (fresh, False)
    assert quiet["recipient_id"] == "muted" and (to_muted, muted_events) == (1, 1)
    assert created and [r["title"] for r in fixed] == ["New message from u1"]
    for ran in (replayed, broken):
        assert "BEGIN;" in ran and ran[-1] == "COMMIT;"


async def test_a_send_batch_written_alone_writes_nothing_when_a_client_id_was_used(
    svc: Services,
) -> None:
    """The statement stops (``ClaimTaken``) unless every message was stored, so the
    other sends of its batch are not written without their replayed neighbour."""
    first, _ = await send(svc, "u1", msg("u2", "a", "c-1"))
    async with svc.pool.acquire() as conn:
        with pytest.raises(ClaimTaken):
            await messages.send_many_alone(conn, [("u3", msg("u2", "b")),
                                                  ("u1", msg("u2", "a", "c-1"))])
        assert await conn.fetchval("SELECT count(*) FROM direct_messages") == 1
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 1
        assert await conn.fetchval("SELECT count(*) FROM user_events") == 3
    again, created = await send(svc, "u1", msg("u2", "a", "c-1"))
    assert (again, created) == (first, False)


async def test_reusing_a_client_id_for_other_content_is_a_conflict(svc: Services) -> None:
    await send(svc, "u1", msg("u2", "a", "c-1"))
    with pytest.raises(Conflict):
        await send(svc, "u1", msg("u2", "b", "c-1"))


async def test_sending_to_yourself_is_invalid_input(svc: Services) -> None:
    with pytest.raises(InvalidInput):
        await send(svc, "u1", msg("u1"))


async def test_a_suppressed_notification_is_counted_not_stored(
    svc: Services, published: Published
) -> None:
    await svc.pool.execute(
        "INSERT INTO preferences (user_id, prefs) VALUES ('u2', $1)", {"muted": True}
    )
    await send(svc, "u1", msg("u2"))
    assert [f["type"] for f in published.of("u2")] == ["message.created"]
    assert metric(svc, "notifyhub_notifications_suppressed_total") == 1
    assert metric(svc, "notifyhub_notifications_created_total") == 0


async def test_a_broken_new_message_template_falls_back_to_fixed_wording(
    svc: Services, published: Published
) -> None:
    await svc.pool.execute("UPDATE templates SET body = '{missing}' WHERE key = 'new_message'")
    message, created = await send(svc, "u1", msg("u2", "still delivered"))
    assert created
    note = published.of("u2")[1]["data"]
    assert (note["title"], note["body"], note["link"]) == (
        "New message from u1", "still delivered", "/messages/u1"
    )
    assert note["data"]["message_id"] == message["id"]


async def test_deleting_for_everyone_frees_the_client_id(svc: Services) -> None:
    first, _ = await send(svc, "u1", msg("u2", "a", "c-1"))
    await messages.delete(svc, "u1", first["id"], for_everyone=True)
    second, created = await send(svc, "u1", msg("u2", "b", "c-1"))
    assert created and second["id"] != first["id"]


async def test_delete_for_everyone_skips_a_recipient_who_already_hid_it(
    svc: Services, published: Published
) -> None:
    message, _ = await send(svc, "u1", msg("u2"))
    await messages.delete(svc, "u2", message["id"])
    await messages.delete(svc, "u1", message["id"], for_everyone=True)
    deleted = {u: [f["data"] for f in published.of(u) if f["type"] == "message.deleted"]
               for u in ("u1", "u2")}
    assert deleted == {"u1": [{"id": message["id"]}], "u2": [{"id": message["id"]}]}
    with pytest.raises(NotFound):
        await messages.delete(svc, "u2", message["id"])


async def test_mark_read_ignores_ids_outside_the_id_range(svc: Services) -> None:
    message, _ = await send(svc, "u2", msg("u1"))
    result = await messages.mark_read(svc, "u1", ids=[-1, 0, 2**70, message["id"]])
    assert result == {"updated": 1}
