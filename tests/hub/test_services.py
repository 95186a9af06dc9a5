"""Services.write, the unit of work: events appended in it are published only once its
transaction has committed, and never when it rolls back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from hub.services import Services
from tests.hub.conftest import listening_services

TIMEOUT = 10


@pytest.fixture
async def frames() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def svc(
    database_url: str, tmp_path: Any, frames: list[dict[str, Any]]
) -> AsyncIterator[Services]:
    def record(channel: str, seq: int | None, message: bytes) -> None:
        frames.append(orjson.loads(message))

    async with listening_services(database_url, tmp_path, record, ["ann"]) as svc:
        yield svc


async def test_events_of_a_unit_of_work_are_published_after_its_commit(
    svc: Services, frames: list[dict[str, Any]]
) -> None:
    async with svc.write() as work:
        events = await work.append([("ann", "t.one", {"n": 1}), ("ann", "t.two", {"n": 2})])
        assert [seq for _, seq, _, _ in events] == [1, 2]
        assert frames == []  # not before the commit
        # Another connection cannot see them yet either.
        assert await svc.pool.fetchval("SELECT count(*) FROM user_events") == 0
    assert [(f["type"], f["seq"]) for f in frames] == [("t.one", 1), ("t.two", 2)]


async def test_a_unit_of_work_that_fails_publishes_nothing_and_logs_nothing(
    svc: Services, frames: list[dict[str, Any]]
) -> None:
    with pytest.raises(RuntimeError):
        async with svc.write() as work:
            await work.append([("ann", "t.lost", {})])
            raise RuntimeError("the operation failed after appending")
    await asyncio.sleep(0)
    assert frames == []
    assert await svc.pool.fetchval("SELECT count(*) FROM user_events") == 0
    async with svc.write() as work:  # the seq the rolled-back event took is free again
        [(_, seq, _, _)] = await work.append([("ann", "t.kept", {})])
    assert seq == 1
