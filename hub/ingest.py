"""Redis ingest, the domain side: payload bytes → NotificationCreate → stored, in batches.

``pubsub.ingest`` reads the ``ingest`` stream and ``pubsub.channel`` the ``publish``
channel; both hand batches of ``(entry_id, payload)`` to an ``Applier``, which returns
one outcome per entry: ``None`` (applied) or why the entry is rejected (it is then
dead-lettered).
Infrastructure failures (database down) raise instead, so nothing is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import orjson

from db.errors import DatabaseRejected, DatabaseUnavailable
from hub import notifications
from hub.errors import HubError, InvalidInput
from hub.models import RESERVED_KEY_PREFIX, NotificationCreate, validate
from hub.services import Services
from pubsub.channel import PublishChannelIngest
from pubsub.ingest import StreamIngest
from pubsub.runner import Entry, Outcome, consumer_name

log = logging.getLogger("notifyhub")

Source = Literal["stream", "publish"]


def parse(entry_id: str | None, payload: bytes | None, max_bytes: int) -> NotificationCreate:
    """The request in ``payload``; a stream entry without a key gets ``stream:<id>``."""
    if payload is None:
        raise InvalidInput("the entry has no payload field")
    if len(payload) > max_bytes:
        raise InvalidInput(f"the payload is larger than {max_bytes} bytes")
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidInput("the payload is not valid JSON") from None
    request = validate(NotificationCreate, value, "the payload")
    if request.idempotency_key is None and entry_id is not None:
        # Set on the fresh request, not copied (a copy cost 3 % of the hub's CPU at
        # 5,000 entries/s); not validated, since the prefix is refused from senders.
        request.idempotency_key = RESERVED_KEY_PREFIX + entry_id
    return request


def describe(exc: HubError) -> str:
    """One line for the dead-letter ``error`` field: the detail, then each bad field."""
    fields = [
        f"{'.'.join(str(part) for part in e.get('loc') or ['body'])}: {e.get('msg')}"
        for e in getattr(exc, "errors", [])
    ]
    return "; ".join([exc.detail, *fields])


class Applier:
    """Applies batches of ingest entries for ``source``; the callback of the ``pubsub`` readers.

    Entries are validated first; the valid ones go to the instance's group-commit writer
    (``hub.notifications.create``) in stream order, where they commit together with
    other creates. An entry that fails (invalid, rejected by the database or a template,
    or any error of its own) fails alone and is dead-lettered. Events are published
    after commit. Raises only when the database itself fails (``DatabaseUnavailable``):
    the caller retries the batch, and idempotency keys make the retry create nothing
    twice.
    """

    def __init__(self, svc: Services, source: Source) -> None:
        self.svc, self.source = svc, source

    async def __call__(self, entries: list[Entry]) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(entries)
        queued: list[tuple[int, asyncio.Future[notifications.Created]]] = []
        writer = notifications.writer(self.svc)
        for n, (entry_id, payload) in enumerate(entries):
            try:
                request = parse(entry_id, payload, self.svc.settings.max_body_bytes)
            except InvalidInput as exc:
                outcomes[n] = describe(exc)
                continue
            except Exception as exc:  # one entry's bug must not stall the stream
                log.exception("ingest entry %s could not be read", entry_id)
                outcomes[n] = f"could not be read: {type(exc).__name__}"
                continue
            queued.append((n, await writer.enqueue(request)))
        if queued:
            await asyncio.wait([future for _, future in queued])
        retry: BaseException | None = None
        applied = 0
        for n, future in queued:
            failure = future.exception()
            if failure is None:
                applied += not future.result().replayed
            elif isinstance(failure, HubError):
                outcomes[n] = describe(failure)
            elif isinstance(failure, DatabaseUnavailable):
                if self.source == "stream":
                    retry = failure  # nothing is acknowledged: the batch is retried
                else:
                    # Publish-channel messages have no idempotency key: a failure is
                    # reported for the entry alone, so entries that committed are not
                    # dead-lettered (and duplicated by a replay).
                    outcomes[n] = f"not applied: {failure or type(failure).__name__}"
            elif isinstance(failure, DatabaseRejected):
                outcomes[n] = f"rejected by the database: {failure}"
            else:
                log.error("ingest entry %s failed: %r", entries[n][0], failure)
                outcomes[n] = f"not applied: {type(failure).__name__}: {failure}"
        self.svc.metrics.ingest_applied.labels(source=self.source).inc(applied)
        if retry is not None:
            raise retry
        return outcomes

    def dead_lettered(self, count: int) -> None:
        """Count entries that a ``pubsub`` reader wrote to the dead-letter stream."""
        self.svc.metrics.ingest_dead.inc(count)

    def retried(self, count: int) -> None:
        """Count entries whose batch a ``pubsub`` reader will apply again (database down)."""
        self.svc.metrics.ingest_retried.inc(count)


class Ingest:
    """Both Redis ingest paths of one hub instance; started when ``HUB_REDIS_URL`` is set.

    Takes over a dead instance's entries after ``HUB_INGEST_CLAIM_IDLE_SECONDS``; on
    stop, settles what it holds for up to ``HUB_INGEST_STOP_GRACE_SECONDS``. The
    channel is read by whichever instance holds its leader lease (``pubsub.channel``).
    """

    def __init__(self, svc: Services) -> None:
        settings = svc.settings
        url = settings.redis_url
        assert url is not None, "Redis ingest needs HUB_REDIS_URL"
        prefix, grace = settings.redis_prefix, settings.ingest_stop_grace_seconds
        stream, publish = Applier(svc, "stream"), Applier(svc, "publish")
        consumer = consumer_name()
        shards: list[int | None] = (
            [None] if settings.ingest_streams == 1 else list(range(settings.ingest_streams)))
        #: One reader per ingest stream (``HUB_INGEST_STREAMS``).
        self.streams = [
            StreamIngest(
                url, prefix, stream, shard=shard, consumer=consumer,
                on_dead=stream.dead_lettered, on_retry=stream.retried, grace=grace,
                claim_idle_ms=max(1, round(settings.ingest_claim_idle_seconds * 1000)),
            )
            for shard in shards
        ]
        self.stream = self.streams[0]
        # One name per instance: the leader lease shows the stream consumer's name.
        self.publish = PublishChannelIngest(
            url, prefix, publish, on_dead=publish.dead_lettered, grace=grace,
            holder=consumer,
        )

    async def start(self) -> None:
        """Start consuming in the background; never fails because Redis is down."""
        for reader in self.streams:
            await reader.start()
        await self.publish.start()

    async def stop(self) -> None:
        """Stop every reader, each settling what it holds within the one grace period.

        Call before the pool and the broker close: a batch in hand still writes to both.
        """
        await asyncio.gather(*(reader.stop() for reader in self.streams), self.publish.stop())
