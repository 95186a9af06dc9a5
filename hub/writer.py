"""Group commit: concurrent writes of one kind are committed together, in batches.

Callers ``await writer.submit(job)`` and get their own result (or exception) once the
batch holding their job has committed. One batch is in flight at a time: while it
commits, new jobs queue up and form the next batch, so a lone job at low load commits
at once (no timer, no added latency) and batches grow with the load. Jobs are batched
in arrival order and batches commit in that order.

A batch whose commit raises one of the ``isolate`` errors (a constraint or data error
that one bad job can cause) is split and retried one job at a time, so a bad job fails
alone, never its batch. Any other error (the database is down) fails the whole batch at
once: retrying job by job would only hammer a dead database.

Bounded: at most ``max_queued`` jobs wait; further callers wait for room.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("notifyhub")

J = TypeVar("J")
R = TypeVar("R")

#: Commits a batch in one transaction; one result or exception per job, in order.
Commit = Callable[[list[J]], Awaitable[list[R | BaseException]]]


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
        isolate: tuple[type[Exception], ...] = (),
        weight: Callable[[J], int] = lambda _: 1,
        key: Callable[[J], str | None] = lambda _: None,
        max_weight: int = 2000,
        max_queued: int = 10_000,
    ) -> None:
        self._commit, self._isolate = commit, isolate
        self._weight, self._key, self._max_weight = weight, key, max_weight
        self._queue: deque[_Pending[J, R]] = deque()
        self._room = asyncio.Semaphore(max_queued)
        self._worker: asyncio.Task[None] | None = None
        #: Batches committed, and jobs in them: ``jobs / batches`` is the mean batch size.
        self.batches = self.jobs = 0

    async def submit(self, job: J) -> R:
        """Queue ``job`` and return its result once its batch has committed.

        Cancelling the caller does not take the job back: it may still commit.
        """
        return await (await self.enqueue(job))

    async def enqueue(self, job: J) -> asyncio.Future[R]:
        """Queue ``job`` (waiting for room); its future resolves once its batch committed."""
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
                await self._commit_batch(self._take())
        finally:
            self._worker = None

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

    async def _commit_batch(self, batch: list[_Pending[J, R]]) -> None:
        try:
            results = await self._commit([p.job for p in batch])
        except BaseException as exc:  # cancelled too: the callers must not wait forever
            if isinstance(exc, self._isolate) and len(batch) > 1:
                for pending in batch:  # find the job that failed; the others commit
                    await self._commit_batch([pending])
                return
            self._settle(batch, [exc] * len(batch))
            if not isinstance(exc, Exception):
                raise
        else:
            self.batches += 1
            self.jobs += len(batch)
            self._settle(batch, results)

    @staticmethod
    def _settle(batch: list[_Pending[J, R]], results: list[R | BaseException]) -> None:
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
