"""What both Redis ingest readers share: the ``apply`` callback types and ``Runner``.

``pubsub.ingest`` reads the ``{prefix}ingest`` stream and ``pubsub.channel`` the
``{prefix}publish`` channel. Each hands what it reads, in batches of
``(entry_id, payload)``, to an ``Apply`` callback (``hub.ingest``), which returns one
outcome per entry: ``None`` when it was applied, else an error message; such an entry
goes to the dead-letter stream ``{prefix}ingest:dead``.

``Runner`` is a reader's background task: it reconnects with backoff, never crashes the
app, and stops gracefully: a reader takes no new input once ``stop`` is called, and a
batch already in hand gets up to ``grace`` seconds to be settled before the reader is
cancelled.

On a Redis Cluster (``pubsub.cluster``) each reader works on one plain connection to the
master that serves its keys (they share one hash tag), found again at every reconnect:
after a failover, or a ``MOVED`` when the slot moved, the reader reconnects there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pubsub.cluster import Router, is_cluster

log = logging.getLogger("notifyhub")

#: ``(stream entry id, or None for a channel message; payload, or None if absent)``
Entry = tuple[str | None, bytes | None]
#: One per entry: ``None`` = applied, a string = why it was rejected.
Outcome = str | None
Apply = Callable[[list[Entry]], Awaitable[list[Outcome]]]
#: Told how many entries were just written to the dead-letter stream.
DeadHook = Callable[[int], None]
#: Key of the dead-letter stream, after the prefix; both readers write to it.
DEAD_LETTERS = "ingest:dead"


def consumer_name() -> str:
    """A consumer name unique to this process: ``host-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 0.1 s doubling to 5 s, jittered."""
    return min(5.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)


def reader_client(url: str, **options: Any) -> redis.Redis:
    """A client for a reader's own connections, with no redis-py retries.

    A dropped connection then ends the reader's turn (``Runner`` reconnects with
    backoff) instead of being reconnected behind its back: the stream reader's CLIENT
    ID stays current, and the channel reader is never resubscribed without knowing.
    No socket_timeout: redis-py then sends through wait_for, which can swallow a
    cancellation on Python 3.11; readers bound their waits with asyncio.timeout instead.
    """
    return redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
        **options,
    )


class Runner:
    """A background task that reconnects with backoff and never crashes the app.

    ``stop`` is graceful: the reader stops taking input at once, and what it holds
    (``_busy``) gets until ``grace`` seconds after the first ``stop`` to be settled.
    """

    name = "ingest"
    #: What becomes of entries still unsettled when the grace runs out (for the log).
    unsettled_fate = "left pending for another instance to take over"

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._task: asyncio.Task[None] | None = None
        self._deadline: float | None = None  # loop time; set by the first stop()
        self._router: Router | None = None

    async def server_url(self, url: str, key: str) -> str:
        """The URL to connect to for ``key``: ``url`` itself, or on a cluster the master
        that serves ``key`` now."""
        if not is_cluster(url):
            return url
        if self._router is None:  # kept: it knows the nodes even once the seed is gone
            self._router = Router(url)
        return await self._router.url_for(key)

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: the reader takes no new input."""
        return self._deadline is not None

    async def start(self) -> None:
        """Begin consuming in the background; returns at once, even if Redis is down."""
        if self._task is None:
            self._deadline = None
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Take no new input; settle what is in hand for up to ``grace`` s, then cancel.

        Returns within about ``grace`` seconds even while Redis or the database is down;
        what is unsettled then stays pending in Redis. Safe to call again or
        concurrently: every call returns once the reader has ended.
        """
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self.grace
            if self._holding():
                log.info("%s: stopping; settling %d entries in hand (up to %.1f s)",
                         self.name, self._holding(), self.grace)
        if self._busy() and not task.done():
            with contextlib.suppress(Exception):  # waking is an optimisation only
                async with asyncio.timeout_at(self._deadline):
                    await self._wake(task)
            await asyncio.wait([task], timeout=max(0.0, self._deadline - loop.time()))
        if not task.done() and self._holding():
            log.warning("%s: %d entries not settled within %.1f s; %s",
                        self.name, self._holding(), self.grace, self.unsettled_fate)
        # Cancel again until it ends: a library may swallow one cancellation (Python
        # 3.11's wait_for does when the awaited call completes at the same moment).
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if self._task is task:  # the first caller to get here reports the outcome
            self._task = None
            if not task.cancelled() and task.exception() is not None:
                log.error("%s ended with an error", self.name, exc_info=task.exception())

    def _holding(self) -> int:
        """How many entries the reader has in hand, not yet settled."""
        return 0

    def _busy(self) -> bool:
        """Whether cancelling now could strand input this reader was given."""
        return self._holding() > 0

    async def _wake(self, task: asyncio.Task[None]) -> None:
        """Hurry a stopping reader that waits on Redis (e.g. a blocked read)."""

    async def _pause(self, attempt: int) -> None:
        """Back off before a retry; briefly while stopping, so a retry fits in the grace."""
        delay = backoff(attempt)
        await asyncio.sleep(min(delay, 0.25) if self.stopping else delay)

    async def _run(self) -> None:
        try:
            await self._reconnecting()
        finally:
            router, self._router = self._router, None
            if router is not None:
                await router.aclose()

    async def _reconnecting(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self._serve()  # returns only once stopping, with nothing in hand
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping and not self._holding():
                    return  # nothing left to settle: no point in reconnecting
                if time.monotonic() - started > 10:
                    attempt = 0
                log.warning("%s: %s: %s; reconnecting", self.name, type(exc).__name__, exc)
                await self._pause(attempt)
                attempt += 1

    async def _serve(self) -> None:
        raise NotImplementedError
