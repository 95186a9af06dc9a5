"""hub.writer.GroupCommit: batching, per-job results, isolation of a bad job, bounds.

The commit callback here is plain Python (the batching logic needs no database);
``test_group_commit.py`` runs the real notification writer on PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from hub.writer import GroupCommit, Written, after_write

TIMEOUT = 10


class Bad(Exception):
    """What one bad job raises (stands for a constraint violation)."""


class Recorder:
    """A commit callback that records its batches; a job "bad" fails its whole batch."""

    def __init__(self, *, hold: asyncio.Event | None = None, fail: Exception | None = None):
        self.batches: list[list[str]] = []
        self.hold, self.fail = hold, fail

    async def __call__(self, jobs: list[str]) -> list[str | BaseException]:
        if self.hold is not None:
            await self.hold.wait()
        self.batches.append(list(jobs))
        if self.fail is not None:
            raise self.fail
        if "bad" in jobs:
            raise Bad("bad job in batch")
        return [job.upper() for job in jobs]


async def test_a_lone_job_commits_at_once_in_a_batch_of_its_own() -> None:
    commit = Recorder()
    writer: GroupCommit[str, str] = GroupCommit(commit)
    assert await asyncio.wait_for(writer.submit("a"), TIMEOUT) == "A"
    assert commit.batches == [["a"]]


async def test_jobs_arriving_during_a_commit_share_the_next_batch_and_get_their_own_results(
) -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit)
    first = asyncio.create_task(writer.submit("a"))
    await asyncio.sleep(0)  # "a" is being committed (held) ...
    rest = [asyncio.create_task(writer.submit(job)) for job in "bcde"]  # ... these queue
    await asyncio.sleep(0)
    hold.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), TIMEOUT)
    assert results == ["A", "B", "C", "D", "E"]
    assert commit.batches == [["a"], ["b", "c", "d", "e"]]
    assert (writer.batches, writer.jobs) == (2, 5)


async def test_a_job_that_fails_its_batch_fails_alone_and_the_others_commit() -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit, transient=(ConnectionRefusedError,))
    tasks = [asyncio.create_task(writer.submit(job)) for job in ("x", "bad", "y")]
    await asyncio.sleep(0)
    hold.set()
    results = await asyncio.wait_for(
        asyncio.gather(*tasks, return_exceptions=True), TIMEOUT
    )
    assert results[0] == "X" and results[2] == "Y"
    assert isinstance(results[1], Bad)
    # Halves are committed again until the bad job is alone.
    assert commit.batches == [["x", "bad", "y"], ["x"], ["bad", "y"], ["bad"], ["y"]]


async def test_a_transient_error_fails_the_whole_batch_without_retries() -> None:
    hold = asyncio.Event()
    down = ConnectionRefusedError("database down")
    commit = Recorder(hold=hold, fail=down)
    writer: GroupCommit[str, str] = GroupCommit(commit, transient=(ConnectionRefusedError,))
    tasks = [asyncio.create_task(writer.submit(job)) for job in "abc"]
    await asyncio.sleep(0)
    hold.set()
    results = await asyncio.wait_for(
        asyncio.gather(*tasks, return_exceptions=True), TIMEOUT
    )
    assert results == [down, down, down]
    assert commit.batches == [["a", "b", "c"]]  # no job-by-job retry against a dead database


async def test_an_error_after_the_batch_was_stored_fails_it_whole_without_retries() -> None:
    """A write without a transaction is stored when its statement returns: made again
    job by job, the batch would be stored twice."""
    hold = asyncio.Event()

    async def commit(jobs: list[str]) -> list[str | BaseException]:
        await hold.wait()
        batches.append(list(jobs))
        with after_write(True):
            raise Bad("building the results")

    batches: list[list[str]] = []
    writer: GroupCommit[str, str] = GroupCommit(commit)
    tasks = [asyncio.create_task(writer.submit(job)) for job in "abc"]
    await asyncio.sleep(0)
    hold.set()
    results = await asyncio.wait_for(
        asyncio.gather(*tasks, return_exceptions=True), TIMEOUT
    )
    assert all(isinstance(r, Written) and isinstance(r.__cause__, Bad) for r in results)
    assert batches == [["a", "b", "c"]]
    with pytest.raises(Bad), after_write(False):  # nothing stored yet: blamed on a job
        raise Bad("before the write")


async def test_jobs_with_the_same_key_never_share_a_batch_and_keep_their_order() -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit, key=lambda job: job[0])
    tasks = [asyncio.create_task(writer.submit(job)) for job in ("k1", "k2", "j1", "k3")]
    await asyncio.sleep(0)
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert commit.batches == [["k1", "j1"], ["k2"], ["k3"]]


async def test_a_batch_closes_at_its_weight_limit() -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit, weight=len, max_weight=4)
    tasks = [asyncio.create_task(writer.submit(job)) for job in ("aa", "bb", "cc", "d")]
    await asyncio.sleep(0)
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert commit.batches == [["aa", "bb"], ["cc", "d"]]


async def test_callers_wait_for_room_once_max_queued_jobs_wait() -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit, max_queued=2)
    first = await writer.enqueue("a")
    await asyncio.sleep(0)  # "a" left the queue: it is the batch being committed
    queued = [await writer.enqueue("b"), await writer.enqueue("c")]
    third = asyncio.create_task(writer.enqueue("d"))
    await asyncio.sleep(0.05)
    assert not third.done()  # two jobs wait already: no room for a third
    hold.set()
    late = await asyncio.wait_for(third, TIMEOUT)
    results = await asyncio.wait_for(asyncio.gather(first, *queued, late), TIMEOUT)
    assert results == ["A", "B", "C", "D"]


@pytest.mark.parametrize("size", [1, 3])
async def test_a_cancelled_commit_leaves_no_caller_waiting(size: int) -> None:
    hold = asyncio.Event()
    commit = Recorder(hold=hold)
    writer: GroupCommit[str, str] = GroupCommit(commit)
    futures = [await writer.enqueue(str(n)) for n in range(size)]
    await asyncio.sleep(0)
    worker = writer._worker
    assert worker is not None
    worker.cancel()
    done, _ = await asyncio.wait(futures, timeout=TIMEOUT)
    assert len(done) == size
    assert all(isinstance(f.exception(), asyncio.CancelledError) for f in futures)


async def test_the_after_step_overlaps_the_next_commit_and_runs_in_order(
) -> None:
    commit = Recorder()
    release = asyncio.Event()
    steps: list[list[str | BaseException]] = []

    async def after(results: list[str | BaseException]) -> None:
        steps.append(results)
        if len(steps) == 1:
            await release.wait()  # the first batch's publish hangs for a while

    writer: GroupCommit[str, str] = GroupCommit(commit, after=after)
    first = await writer.enqueue("a")
    await asyncio.sleep(0.01)  # "a" committed; its after step is held
    second = await writer.enqueue("b")
    await asyncio.sleep(0.01)
    assert commit.batches == [["a"], ["b"]]  # "b" committed meanwhile ...
    assert steps == [["A"]]  # ... but its after step waits for the first one's
    assert first.result() == "A"  # answered as its after step began
    assert not second.done()  # answered only once the step before its own has ended
    release.set()
    assert await asyncio.wait_for(second, TIMEOUT) == "B"
    assert steps == [["A"], ["B"]]


async def test_callers_are_answered_once_the_after_step_waits_not_when_it_ends() -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def after(results: list[str | BaseException]) -> None:
        order.append("after began")  # a publish is written before its first wait
        await release.wait()  # the broker's reply, and the fan-out it sets off
        order.append("after ended")

    writer: GroupCommit[str, str] = GroupCommit(Recorder(), after=after)

    async def caller() -> None:
        assert await writer.submit("a") == "A"
        order.append("answered")

    task = asyncio.create_task(caller())
    await asyncio.wait_for(task, TIMEOUT)
    assert order == ["after began", "answered"]
    settling = asyncio.create_task(writer.settle())
    await asyncio.sleep(0.01)
    assert not settling.done()  # settle waits for the step in flight
    release.set()
    await asyncio.wait_for(settling, TIMEOUT)
    assert order == ["after began", "answered", "after ended"]
    await asyncio.wait_for(writer.settle(), TIMEOUT)  # and returns at once when none runs


async def test_settle_waits_for_a_batch_still_committing_and_its_after_step() -> None:
    hold = asyncio.Event()
    published: list[list[str | BaseException]] = []

    async def after(results: list[str | BaseException]) -> None:
        published.append(results)

    writer: GroupCommit[str, str] = GroupCommit(Recorder(hold=hold), after=after)
    job = await writer.enqueue("a")
    await asyncio.sleep(0)  # the batch is committing (held), nothing to publish yet
    settling = asyncio.create_task(writer.settle())
    await asyncio.sleep(0.01)
    assert not settling.done()
    hold.set()
    await asyncio.wait_for(settling, TIMEOUT)
    assert published == [["A"]] and job.result() == "A"


async def test_an_after_step_that_raises_is_logged_and_its_callers_keep_their_results(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def after(results: list[str | BaseException]) -> None:
        raise RuntimeError("broker exploded")

    writer: GroupCommit[str, str] = GroupCommit(Recorder(), after=after)
    assert await asyncio.wait_for(writer.submit("a"), TIMEOUT) == "A"
    await asyncio.wait_for(writer.settle(), TIMEOUT)
    assert await asyncio.wait_for(writer.submit("b"), TIMEOUT) == "B"  # it goes on
    await asyncio.wait_for(writer.settle(), TIMEOUT)
    failures = [r for r in caplog.records if "the step after a group commit failed" in r.message]
    assert len(failures) == 2 and failures[0].exc_info is not None
