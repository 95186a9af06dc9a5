"""Group commit: concurrent writes of one kind are committed together, in batches.

Callers ``await writer.submit(job)`` and get their own result (or exception) once the
batch holding their job has committed, as its ``after`` step (publishing its events)
starts: the step runs up to its first wait before any caller resumes, and goes on
while they do, so no answer waits for the broker's reply or for the fan-out that the
publish sets off. (With a Redis connection at hand, the publish of up to 1,000 events
is on the wire by that first wait; more events, a connection still to open, or a
Redis Cluster, whose nodes are written to by tasks of their own, can go out after the
callers resume: a later write of theirs may then be published first, which the live
layer puts back in ``seq`` order.)
One batch commits at a time: while it commits, new jobs queue up and form the
next batch, so a lone job at low load commits at once (no timer, no added latency) and
batches grow with the load. Jobs are batched in arrival order, batches commit in that
order, and their ``after`` steps run in that order too: batch N's ``after`` overlaps
batch N+1's commit, never batch N+1's ``after``. ``settle()`` waits until no batch
commits or publishes (before the broker stops).

A batch whose commit raises one of the ``transient`` errors (the database is down)
fails whole at once: retrying job by job would only hammer a dead database. Any other
error (a constraint, a value the database or the encoder refuses, a bug one input
triggers) is blamed on one job: the batch is split in halves and each half committed
again, down to the job that fails, so a bad job fails alone, never its batch, and the
good jobs still commit in a few transactions. An error after the batch was stored
(``Written``: a write without a transaction of its own is stored once its statement
returns) fails it whole too: made again, it would be stored twice.

Bounded: at most ``max_queued`` jobs wait; further callers wait for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("notifyhub")

J = TypeVar("J")
R = TypeVar("R")

#: Commits a batch in one transaction; one result or exception per job, in order.
Commit = Callable[[list[J]], Awaitable[list[R | BaseException]]]
#: Runs after a batch committed, with its results (exceptions included), as the callers
#: get them; must not raise.
After = Callable[[list[R | BaseException]], Awaitable[None]]


async def _nothing(results: list[Any]) -> None:
    return None


class Written(Exception):
    """An error after a batch was written (a write without a transaction of its own
    stores as it returns): the batch fails whole, never split and made again, which
    would store its jobs twice."""


@contextlib.contextmanager
def after_write(written: bool) -> Iterator[None]:
    """Inside, an error is ``Written`` when ``written``: the code after a write that
    stored without a transaction."""
    try:
        yield
    except Exception as exc:
        if not written or isinstance(exc, Written):
            raise
        raise Written(f"after the batch was stored: {exc!r}") from exc


@dataclass(slots=True)
class _Pending(Generic[J, R]):
    job: J
    future: asyncio.Future[R]


class GroupCommit(Generic[J, R]):
    """Batches concurrent jobs into one ``commit`` call at a time (see module docstring).

    ``weight`` sizes a job (recipients of a notification): a batch closes once its
    weight reaches ``max_weight``. Jobs with the same ``key`` (an idempotency key) never
    share a batch, so the later one sees the earlier one's committed effect.
    """

    def __init__(
        self,
        commit: Commit[J, R],
        *,
        after: After[R] = _nothing,
        transient: tuple[type[Exception], ...] = (),
        weight: Callable[[J], int] = lambda _: 1,
        key: Callable[[J], str | None] = lambda _: None,
        max_weight: int = 2000,
        max_queued: int = 10_000,
    ) -> None:
        self._commit, self._after, self._transient = commit, after, transient
        self._weight, self._key, self._max_weight = weight, key, max_weight
        self._queue: deque[_Pending[J, R]] = deque()
        self._room = asyncio.Semaphore(max_queued)
        self._worker: asyncio.Task[None] | None = None
        #: The newest batch's ``after`` step; it answers that batch's callers as it starts.
        self._finishing: asyncio.Task[None] | None = None
        #: Batches committed, and jobs in them: ``jobs / batches`` is the mean batch size.
        self.batches = self.jobs = 0

    async def submit(self, job: J) -> R:
        """Queue ``job``; its result once its batch committed (its ``after`` step begun).

        Cancelling the caller does not take the job back: it may still commit.
        """
        return await (await self.enqueue(job))

    async def enqueue(self, job: J) -> asyncio.Future[R]:
        """Queue ``job`` (waiting for room); its future resolves as ``submit`` returns."""
        await self._room.acquire()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(job, future))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name="group commit"
            )
        return future

    async def _run(self) -> None:
        try:
            while self._queue:
                settled = await self._commit_batch(self._take())
                if self._finishing is not None:
                    # The previous batch's ``after`` ends first, so the steps run in order
                    # and at most one is in flight beside a commit.
                    try:
                        await asyncio.shield(self._finishing)
                    except BaseException:
                        _answer(settled)  # cancelled: committed, but not published
                        raise
                self._finishing = asyncio.get_running_loop().create_task(
                    self._finish(settled), name="group commit: after"
                )
        finally:
            self._worker = None

    async def settle(self) -> None:
        """Wait until no batch commits and no ``after`` step runs (at once if none): a
        batch still committing publishes after this returns otherwise."""
        while running := [task for task in (self._worker, self._finishing)
                          if task is not None and not task.done()]:
            await asyncio.wait(running)

    async def _finish(self, settled: list[tuple[_Pending[J, R], R | BaseException]]) -> None:
        # Answered first: the callers resume only once this step waits (see the module
        # docstring), and none waits for the broker's reply or the fan-out it sets off.
        _answer(settled)
        try:
            await self._after([result for _, result in settled])
        except Exception:
            log.exception("the step after a group commit failed")

    def _take(self) -> list[_Pending[J, R]]:
        """The next batch, in arrival order; a job whose key is already in it waits."""
        batch: list[_Pending[J, R]] = []
        deferred: list[_Pending[J, R]] = []
        keys: set[str] = set()
        weight = 0
        while self._queue and weight < self._max_weight:
            pending = self._queue.popleft()
            key = self._key(pending.job)
            if key is not None:
                if key in keys:
                    deferred.append(pending)
                    continue
                keys.add(key)
            batch.append(pending)
            weight += self._weight(pending.job)
        self._queue.extendleft(reversed(deferred))
        for _ in batch:
            self._room.release()
        return batch

    async def _commit_batch(
        self, batch: list[_Pending[J, R]]
    ) -> list[tuple[_Pending[J, R], R | BaseException]]:
        """Commit ``batch``; each job with its result. Raises only when cancelled (after
        failing every job of the batch, so no caller waits forever)."""
        try:
            results = await self._commit([p.job for p in batch])
        except BaseException as exc:
            blame_one = isinstance(exc, Exception) and not isinstance(
                exc, (*self._transient, Written))
            if blame_one and len(batch) > 1:
                half = len(batch) // 2  # find the job that failed; the others commit
                return [*await self._commit_batch(batch[:half]),
                        *await self._commit_batch(batch[half:])]
            if not isinstance(exc, Exception):
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                raise
            return [(pending, exc) for pending in batch]
        self.batches += 1
        self.jobs += len(batch)
        return list(zip(batch, results, strict=True))


def _answer(settled: list[tuple[_Pending[J, R], R | BaseException]]) -> None:
    """Hand each waiting caller its result or exception."""
    for pending, result in settled:
        if pending.future.done():
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)
