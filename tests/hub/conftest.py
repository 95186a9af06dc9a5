"""What the hub tests share: Services on the test's database with an in-memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from db.pool import create_pool
from hub.services import Services
from hub.settings import Settings
from pubsub.broker import MessageHandler
from pubsub.memory import MemoryBroker
from tests.conftest import SECRET


@asynccontextmanager
async def listening_services(
    database_url: str, data_dir: Path, on_message: MessageHandler, users: Iterable[str],
    connections: int = 6,
) -> AsyncIterator[Services]:
    """Services whose in-memory broker hands ``users``' events to ``on_message``, with a
    pool of at most ``connections``."""
    settings = Settings(database_url=database_url, data_dir=data_dir, jwt_secret=SECRET)
    pool = await create_pool(database_url, 1, connections)
    broker = MemoryBroker()

    async def nothing() -> None:
        return None

    await broker.start(on_message, nothing)
    for user in users:
        await broker.subscribe(f"user:{user}")
    try:
        yield Services(settings, pool, broker)
    finally:
        await broker.stop()
        await pool.close()


@asynccontextmanager
async def statements(conn: Any) -> AsyncIterator[list[str]]:
    """The statements ``conn`` runs inside the block, in order, BEGIN and COMMIT left out
    (the round trips a write costs besides its transaction's own two)."""
    sent: list[str] = []

    def logged(record: Any) -> None:
        if record.query not in ("BEGIN;", "COMMIT;"):
            sent.append(record.query)
    conn.add_query_logger(logged)
    try:
        yield sent
        await asyncio.sleep(0)  # asyncpg calls the loggers soon after, not at once
    finally:
        conn.remove_query_logger(logged)
