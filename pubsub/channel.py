"""The fire-and-forget ``{prefix}publish`` channel, applied by one hub instance at a time.

Redis delivers a channel message to every subscriber, and the message carries no
idempotency key, so if every instance subscribed, each message would be applied once
per instance. Instead the instances elect the one reader with a lease in Redis:

- ``{prefix}publish:leader`` holds the holder's id and expires after ``lease_ms``. An
  instance takes it when it is free (or still its own, e.g. restored after a Redis
  restart); the holder renews it every third of ``lease_ms``, only while it still holds
  it (compare-and-renew), and deletes it on ``stop`` (compare-and-delete). The others
  try again every third of ``lease_ms``.
- Only the holder subscribes, on a fresh connection for each term. The term ends, and
  that connection is closed (which unsubscribes it), as soon as a renewal fails or has
  not answered within a third of ``lease_ms`` (so at least a third before the lease
  can expire), on any Redis error, and on ``stop``.
- One more rule makes "applied once" hold even when the end of a term is late (an apply
  that takes long, a connection that does not close in time): the holder takes a
  message off its socket only while its lease is valid by its own clock, counted from
  when it *sent* the command that set or renewed the lease, so never past the key's
  expiry in Redis. Such a message was published during this holder's lease, and leases
  never overlap, so no other instance can have read it too. Later ones are dropped.

Messages published while no instance holds the lease (up to about ``lease_ms`` after the
holder dies, a third of it after a clean stop) are not applied: fire-and-forget. Two
readers at once remain possible only if Redis loses the key before it expires while
the holder stays connected (a failover to a replica that had not received it; a
restart breaks the holder's connection, which ends its term) or if a clock misbehaves
by more than the lease (the Redis host's clock jumps forward, or a holder's host is
suspended, which its monotonic clock does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript

from pubsub.cluster import shared_prefix
from pubsub.runner import DEAD_LETTERS, Apply, DeadHook, Runner, consumer_name, reader_client

log = logging.getLogger("notifyhub")

# Take the lease if it is free or already ours: after a renewal that timed out but
# reached Redis, or a restart that restored the key, the holder need not wait it out.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# Only while still ours: a lease that lapsed (and maybe served someone else) is not
# silently resumed; the holder starts a new term with a new subscription instead.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class Lease:
    """``holder``'s lease on ``key`` in Redis; ``held`` errs on the side of "expired".

    Its end is counted on the local monotonic clock from when the acquiring or renewing
    command was sent, less 1% and 2 ms for clock drift, so it is never later than the
    expiry Redis gives the key.
    """

    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_ms: int) -> None:
        self.key, self.holder, self.ttl_ms = key, holder, ttl_ms
        self.validity = ttl_ms / 1000 * 0.99 - 0.002
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self.sent = -math.inf  # when the last successful acquire or renewal was sent
        self._until = -math.inf

    def held(self) -> bool:
        """True while the lease is surely still ours in Redis."""
        return time.monotonic() < self._until

    def remaining(self) -> float:
        """Seconds until ``held`` turns false, unless renewed (may be negative)."""
        return self._until - time.monotonic()

    async def acquire(self) -> bool:
        """Take the lease if it is free or ours; True if we hold it now."""
        return await self._extend(self._acquire)

    async def renew(self) -> bool:
        """Push the expiry out again if the lease is still ours; False if it is not."""
        return await self._extend(self._renew)

    def lose(self) -> None:
        """Consider the lease gone from now on (a renewal failed or did not answer)."""
        self._until = -math.inf

    async def release(self) -> None:
        """Delete the key if it is still ours, so another instance can take over at once."""
        self.lose()
        await self._release(keys=[self.key], args=[self.holder])

    async def _extend(self, script: AsyncScript) -> bool:
        sent = time.monotonic()
        if not await script(keys=[self.key], args=[self.holder, self.ttl_ms]):
            self.lose()
            return False
        self.sent, self._until = sent, sent + self.validity
        return True


class PublishChannelIngest(Runner):
    """Applies ``{prefix}publish`` messages on the instance holding the leader lease.

    Every instance runs one; the holder of ``{prefix}publish:leader`` (see the module
    docstring) subscribes and applies each message, so each is applied by one instance.
    Messages that arrive together are applied as one batch. Rejected messages, and
    messages that could not be applied at all, go to ``{prefix}ingest:dead`` so they are
    not lost; the reader itself goes on. ``stop`` finishes the batch in hand (applied,
    rejects dead-lettered), then unsubscribes and releases the lease; a message not yet
    read is not applied here. ``holder`` must be unique to the process.
    """

    name = "publish-ingest"
    unsettled_fate = "they may not have been applied"
    #: How often an idle subscribed reader looks at its lease and at ``stop``, in seconds.
    poll = 0.1

    def __init__(
        self, url: str, prefix: str, apply: Apply, *, batch: int = 100,
        on_dead: DeadHook | None = None, grace: float = 5.0, holder: str | None = None,
        lease_ms: int = 5000,
    ) -> None:
        super().__init__(grace)
        prefix = shared_prefix(url, prefix)
        self.url, self.channel = url, f"{prefix}publish"
        self.lease_key, self.dead_key = f"{prefix}publish:leader", prefix + DEAD_LETTERS
        self.holder = holder or consumer_name()
        self.lease_ms, self.retry_every = lease_ms, lease_ms / 3000
        self.batch = batch
        self._apply, self._on_dead = apply, on_dead
        self._contending = False  # taking or holding the lease: stop waits to release it
        self._subscribed = False
        self._applying = False  # the reader is inside apply and away from its socket
        self._payloads: list[bytes] | None = None  # the batch in hand

    @property
    def leading(self) -> bool:
        """True while this reader holds the lease and is subscribed."""
        return self._subscribed

    def _holding(self) -> int:
        return len(self._payloads) if self._payloads is not None else 0

    def _busy(self) -> bool:
        return self._contending or self._holding() > 0

    async def _serve(self) -> None:
        client = reader_client(await self.server_url(self.url, self.lease_key))
        lease = Lease(client, self.lease_key, self.holder, self.lease_ms)
        try:
            while not self.stopping:
                self._contending = True
                try:
                    async with asyncio.timeout(self.retry_every):
                        acquired = await lease.acquire()
                    if acquired:
                        await self._lead(client, lease)
                finally:
                    self._contending = False
                if not self.stopping:
                    await asyncio.sleep(self.retry_every)
        finally:
            await client.aclose()

    async def _lead(self, client: redis.Redis, lease: Lease) -> None:
        """One term as the reader: subscribe, apply while the lease holds, let go."""
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        keeper = asyncio.create_task(self._keep(lease, pubsub), name=f"{self.name}-lease")
        try:
            if not self.stopping:
                log.info("%s: %s holds the lease; subscribing to %s",
                         self.name, self.holder, self.channel)
                await pubsub.subscribe(self.channel)
                self._subscribed = True
                await self._read(client, pubsub, lease)
        finally:
            # Unsubscribed first (by closing the connection), released last: no moment
            # in which another instance holds the lease while this one still reads.
            self._subscribed = False
            await pubsub.aclose()
            keeper.cancel()
            await asyncio.wait([keeper])
            with contextlib.suppress(Exception):  # else it expires after lease_ms
                async with asyncio.timeout(self.retry_every):
                    await lease.release()

    async def _keep(self, lease: Lease, pubsub: PubSub) -> None:
        """Renew the lease every third of its TTL; when that fails, end the term at once."""
        while True:
            await asyncio.sleep(max(0.0, lease.sent + self.retry_every - time.monotonic()))
            try:
                # Given up a third of the TTL before the lease can expire (unless the loop
                # runs late; reads stop at the lease's end all the same).
                async with asyncio.timeout(self.retry_every):
                    renewed = await lease.renew()
            except Exception as exc:
                log.warning("%s: renewing the lease failed: %r", self.name, exc)
                renewed = False
            if not renewed:
                lease.lose()
                log.warning("%s: %s lost the lease; unsubscribing", self.name, self.holder)
                if self._applying:  # not reading now, and it sees the loss before it does
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                return

    async def _read(self, client: redis.Redis, pubsub: PubSub, lease: Lease) -> None:
        """Apply messages, in batches, while the lease holds and no stop was asked."""
        while not self.stopping and lease.held():
            wait = min(self.poll, max(0.0, lease.remaining()))
            message = await pubsub.get_message(timeout=wait)
            if message is None:
                continue
            # Held from the moment it is read, so a stop in between waits for it.
            payloads = self._payloads = []
            try:
                while message is not None and lease.held():  # read later: maybe not ours
                    payloads.append(message["data"])
                    if len(payloads) >= self.batch or self.stopping:
                        break
                    message = await pubsub.get_message(timeout=0.0)
                if payloads:
                    self._applying = True
                    await self._handle(client, payloads)
            finally:
                self._payloads, self._applying = None, False

    async def _handle(self, client: redis.Redis, payloads: list[bytes]) -> None:
        try:
            outcomes = await self._apply([(None, p) for p in payloads])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Fire-and-forget has no redelivery: park the messages for a replay instead.
            outcomes = [f"not applied: {exc!r}"] * len(payloads)
        dead = [(p, e) for p, e in zip(payloads, outcomes, strict=True) if e is not None]
        if not dead:
            return
        for _, error in dead:
            log.warning("publish message dead-lettered: %s", error)
        try:
            async with client.pipeline(transaction=True) as pipe:
                for payload, error in dead:
                    pipe.xadd(self.dead_key, {
                        "payload": payload, "error": error[:2000], "source": "publish",
                    })
                await pipe.execute()
        except Exception:
            log.error("could not dead-letter %d publish messages: %r", len(dead),
                      [p[:200] for p, _ in dead], exc_info=True)
            raise
        if self._on_dead is not None:
            self._on_dead(len(dead))
