"""The runtime's closing order, on the test's database with the in-process broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub.runtime import Runtime
from hub.settings import Settings
from hub.writer import GroupCommit
from tests.conftest import SECRET

TIMEOUT = 10


async def test_closing_waits_for_the_last_batchs_publish_before_stopping_the_broker(
    database_url: str, tmp_path: Path,
) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path, jwt_secret=SECRET)
    runtime = Runtime(settings, live=False)
    await runtime.open_database()
    services = await runtime.connect()
    order: list[str] = []
    release = asyncio.Event()
    stop = services.broker.stop

    async def stopped() -> None:
        order.append("broker stopped")
        await stop()

    services.broker.stop = stopped  # type: ignore[method-assign]

    async def commit(jobs: list[str]) -> list[str | BaseException]:
        return list(jobs)

    async def publish(results: list[str | BaseException]) -> None:
        await release.wait()  # a broker slow to take the batch's events
        order.append("published")

    writer = services.writer("test", lambda: GroupCommit(commit, after=publish))
    assert await asyncio.wait_for(writer.submit("a"), TIMEOUT) == "a"  # answered first
    closing = asyncio.create_task(runtime.close())
    await asyncio.sleep(0.05)
    assert not closing.done() and order == []  # the publish still runs: the broker waits
    release.set()
    await asyncio.wait_for(closing, TIMEOUT)
    assert order == ["published", "broker stopped"]
