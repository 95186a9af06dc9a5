"""Redis ingest for backend services: the reader of the ``{prefix}ingest`` stream.

This module owns the Redis side only; what an entry means is decided by the ``Apply``
callback (``hub.ingest``; its contract is in ``pubsub.runner``). An entry it rejects goes
to ``{prefix}ingest:dead`` (fields ``payload``, ``error``, ``source``, ``id``) in the same
MULTI that acknowledges it. When ``apply`` raises (the database is down), nothing is
acknowledged: the batch is retried, with backoff, until it succeeds.

Stream guarantees: at-least-once delivery; the effect is exactly-once because every
entry carries an idempotency key (the applier defaults it to the stream id).

Stopping is graceful (``pubsub.runner.Runner``): a batch already in hand gets up to
``grace`` seconds to be applied and acknowledged (dead letters written); what is then
still unsettled stays pending in Redis and is taken over by another instance after
``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from pubsub.cluster import shared_prefix
from pubsub.runner import (
    DEAD_LETTERS,
    Apply,
    DeadHook,
    Entry,
    Outcome,
    Runner,
    consumer_name,
    reader_client,
)

log = logging.getLogger("notifyhub")

GROUP = "notifyhub"
#: A stream entry as read: ``(id, fields)``; no fields = deleted while pending.
RawEntry = tuple[str, dict[bytes, bytes]]
#: A consumer with nothing pending and idle this long is a dead instance's leftover.
STALE_CONSUMER_MS = 3_600_000


def _entries(reply: Any) -> list[RawEntry]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    rows = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    if rows and isinstance(rows[0], list):  # RESP3 map values come wrapped once more
        rows = rows[0]
    return [(i.decode(), f or {}) for i, f in rows]


def _stream_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = (value.decode() if isinstance(value, bytes) else value).partition("-")
    return int(ms), int(seq or 0)


class StreamIngest(Runner):
    """Consumes ``{prefix}ingest`` in group ``notifyhub``; acks only what ``apply`` settled.

    With ``shard`` n it consumes ``{prefix}ingest:{n}`` instead, dead-letters to
    ``{prefix}ingest:{n}:dead``, and hands ``apply`` the entry ids as ``n/<id>``.

    On (re)connect it creates the group if needed and first re-reads this consumer's own
    pending entries. Every few seconds it takes over entries idle longer than
    ``claim_idle_ms`` (XAUTOCLAIM) from consumers that died, dead-letters entries
    delivered more than ``max_deliveries`` times (poison), and trims entries every group
    has acknowledged.

    ``stop`` lets a read in flight return (a blocked XREADGROUP is woken with CLIENT
    UNBLOCK) and settles what it returned, so entries delivered to a stopping instance
    are acknowledged by it rather than left for a takeover ``claim_idle_ms`` later.
    """

    name = "stream-ingest"

    def __init__(
        self,
        url: str,
        prefix: str,
        apply: Apply,
        *,
        shard: int | None = None,
        consumer: str | None = None,
        claim_idle_ms: int = 30_000,
        batch: int = 1000,
        block_ms: int = 1000,
        max_deliveries: int = 5,
        on_dead: DeadHook | None = None,
        on_retry: DeadHook | None = None,
        grace: float = 5.0,
    ) -> None:
        super().__init__(grace)
        if shard is None:
            prefix = shared_prefix(url, prefix)
            self.key, self.dead_key = f"{prefix}ingest", prefix + DEAD_LETTERS
        else:  # the hash tag {n}: each shard's stream and dead letters share one slot
            self.key = f"{prefix}ingest:{{{shard}}}"
            self.dead_key = f"{self.key}:dead"
            self.name = f"stream-ingest-{shard}"
        # Stream ids are unique within one stream only: a shard's ids go to ``apply``
        # qualified (``<shard>/<id>``), so ids of two shards never collide.
        self._qualifier = "" if shard is None else f"{shard}/"
        self.url = url
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms, self.batch, self.block_ms = claim_idle_ms, batch, block_ms
        self.max_deliveries = max_deliveries
        self.claim_interval = min(5.0, claim_idle_ms / 2000)
        self._apply, self._on_dead, self._on_retry = apply, on_dead, on_retry
        # The batch being settled survives reconnects, so a Redis blip neither re-applies
        # it from scratch nor bumps its delivery count by re-reading it.
        self._held: tuple[list[RawEntry], list[Outcome] | None] | None = None
        self._client: redis.Redis | None = None
        self._reading = False  # an XREADGROUP/XAUTOCLAIM is in flight
        self._connection_id: int | None = None  # CLIENT ID of the reader's connection
        self._server = url  # where the reader's connection goes (a cluster: one master)

    async def _serve(self) -> None:
        # One connection, so the CLIENT ID that ``_wake`` unblocks is the reader's.
        self._server = await self.server_url(self.url, self.key)
        client = reader_client(self._server, single_connection_client=True)
        self._client = client
        try:
            with contextlib.suppress(ResponseError):  # an ACL may forbid it: stop then waits
                self._connection_id = await client.client_id()
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
                await client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            if self._held is not None:  # a batch cut off by the last disconnect
                entries, outcomes = self._held
                if outcomes is None:  # not known to be applied: again (it is idempotent)
                    await self._handle(entries, redelivered=True)
                else:
                    await self._settle(entries, outcomes)
            await self._consume()
        finally:
            self._client = None
            self._connection_id = None
            await client.aclose()

    @property
    def _redis(self) -> redis.Redis:
        assert self._client is not None, "only used while serving"
        return self._client

    def _holding(self) -> int:
        return len(self._held[0]) if self._held is not None else 0

    def _busy(self) -> bool:
        # A read in flight may deliver entries: cancelling it would strand them.
        return self._reading or self._held is not None

    @contextlib.contextmanager
    def _delivering(self) -> Iterator[None]:
        """Marks a read that may deliver entries; ``_handle`` holds them before it yields."""
        self._reading = True
        try:
            yield
        finally:
            self._reading = False

    async def _wake(self, task: asyncio.Task[None]) -> None:
        """Make a blocked XREADGROUP return now, as if its BLOCK had timed out.

        Sent from a connection of its own, and again while the read is in flight: the
        read may reach Redis after an earlier CLIENT UNBLOCK did.
        """
        async with redis.Redis.from_url(
            self._server, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        ) as client:
            while self._reading and not task.done():
                if self._connection_id is not None:
                    await client.client_unblock(self._connection_id)
                await asyncio.wait([task], timeout=0.05)

    async def _consume(self) -> None:
        own_pending = True
        next_tick = time.monotonic() + self.claim_interval
        while not self.stopping:
            if time.monotonic() >= next_tick:
                await self._takeover()
                if self.stopping:
                    return
                await self._housekeep()
                next_tick = time.monotonic() + self.claim_interval
                continue
            cursor = "0" if own_pending else ">"
            block = None if own_pending else min(self.block_ms, int(self.claim_interval * 1000))
            entries = await self._read(cursor, block)
            if block is not None and 0 < len(entries) < self.batch and not self.stopping:
                # A blocked read returns as soon as the first entry of a burst is there
                # (Redis answers it right after the first XADD of a pipeline): take what
                # else has arrived by now, rather than leave it a whole batch behind.
                # Held meanwhile: should that read fail, a reconnect (or a stop) settles
                # them without reading them again.
                self._held = (entries, None)
                entries += await self._read(">", None, self.batch - len(entries))
            if own_pending and not entries:
                own_pending = False
            elif entries:
                await self._handle(entries, redelivered=own_pending)

    async def _read(self, cursor: str, block: int | None,
                    count: int | None = None) -> list[RawEntry]:
        """One XREADGROUP from ``cursor`` (``>``: new entries; ``0``: this consumer's
        pending ones), blocking up to ``block`` ms (None: not at all)."""
        with self._delivering():
            async with asyncio.timeout((block or 0) / 1000 + 10):  # a half-open socket
                reply = await self._redis.xreadgroup(
                    GROUP, self.consumer, {self.key: cursor}, count=count or self.batch,
                    block=block,
                )
        return _entries(reply)

    async def _takeover(self) -> None:
        """Claim entries a dead consumer left idle; bounded per tick so reads go on."""
        cursor: bytes | str = "0-0"
        for _ in range(10):
            if self.stopping:
                return
            with self._delivering():
                reply = await self._redis.xautoclaim(
                    self.key, GROUP, self.consumer, self.claim_idle_ms, cursor, count=self.batch
                )
            cursor, claimed = reply[0], reply[1]
            if claimed:
                log.info("%s took over %d idle entries", self.consumer, len(claimed))
                await self._handle(_entries([[self.key, claimed]]), redelivered=True)
            if _stream_id(cursor) == (0, 0):
                return

    async def _handle(self, entries: list[RawEntry], *, redelivered: bool) -> None:
        """Apply a batch (retrying while ``apply`` raises), then ack and dead-letter it."""
        self._held = (entries, None)  # first, before any await: ``stop`` must see it
        outcomes: list[Outcome] = [None] * len(entries)
        todo: list[int] = []
        counts = await self._deliveries(entries) if redelivered else {}
        for n, (entry_id, fields) in enumerate(entries):
            if not fields:
                continue  # deleted from the stream (XDEL/trim) while pending: just ack
            if counts.get(entry_id, 0) > self.max_deliveries:
                outcomes[n] = (f"delivered {counts[entry_id]} times without being "
                               "acknowledged; dead-lettered as a poison entry")
            else:
                todo.append(n)
        batch: list[Entry] = [(self._qualifier + entries[n][0], entries[n][1].get(b"payload"))
                              for n in todo]
        attempt = 0
        while batch:
            try:
                results = await self._apply(batch)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: applying %d entries failed (%r); retrying",
                            self.name, len(batch), exc)
                if self._on_retry is not None:
                    self._on_retry(len(batch))
                await self._pause(attempt)
                attempt += 1
                await self._renew([e for e, _ in entries])
        else:
            results = []
        for n, outcome in zip(todo, results, strict=True):
            outcomes[n] = outcome
        await self._settle(entries, outcomes)

    async def _renew(self, ids: list[Any]) -> None:
        """Reset the idle time of held entries so no one takes them over while we retry.

        XCLAIM with JUSTID leaves the delivery count alone, so a long database outage
        does not turn valid entries into "poison".
        """
        try:
            await self._redis.xclaim(self.key, GROUP, self.consumer, 0, ids, justid=True)
        except Exception as exc:
            log.debug("%s: lease renewal failed: %r", self.name, exc)

    async def _settle(self, entries: list[RawEntry], outcomes: list[Outcome]) -> None:
        """Dead-letter the rejected entries and ack the whole batch, in one MULTI."""
        self._held = (entries, outcomes)
        dead = 0
        async with self._redis.pipeline(transaction=True) as pipe:
            for (entry_id, fields), error in zip(entries, outcomes, strict=True):
                if error is not None:
                    dead += 1
                    pipe.xadd(self.dead_key, {
                        "payload": fields.get(b"payload", b""), "error": error[:2000],
                        "source": "stream", "id": self._qualifier + entry_id,
                    })
                    log.warning("ingest entry %s dead-lettered: %s", entry_id, error)
            pipe.xack(self.key, GROUP, *[entry_id for entry_id, _ in entries])
            await pipe.execute()
        self._held = None
        if dead and self._on_dead is not None:
            self._on_dead(dead)

    async def _deliveries(self, entries: list[RawEntry]) -> dict[str, int]:
        """How many times each of ``entries`` has been delivered (XPENDING)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(self.key, GROUP, entry_id, entry_id, 1)
            replies = await pipe.execute()
        return {
            row["message_id"].decode(): int(row["times_delivered"])
            for reply in replies for row in reply
        }

    async def _housekeep(self) -> None:
        """Trim entries every group has acked; forget consumers long gone with nothing held."""
        groups: list[dict[str, Any]] = await self._redis.xinfo_groups(self.key)
        floor: tuple[int, int] | None = None
        for group in groups:
            low = _stream_id(group["last-delivered-id"])
            if group["pending"]:
                summary = await self._redis.xpending(self.key, group["name"])
                if summary["min"] is not None:
                    low = min(low, _stream_id(summary["min"]))
            floor = low if floor is None else min(floor, low)
        if floor is not None and floor > (0, 0):
            await self._redis.xtrim(self.key, minid=f"{floor[0]}-{floor[1]}", approximate=True)
        stale = max(STALE_CONSUMER_MS, 10 * self.claim_idle_ms)
        for consumer in await self._redis.xinfo_consumers(self.key, GROUP):
            if not consumer["pending"] and consumer["idle"] > stale:
                await self._redis.xgroup_delconsumer(self.key, GROUP, consumer["name"])
