"""The retention task: periodically prunes what the configured history no longer needs."""

from __future__ import annotations

import asyncio
import logging

from db import cleanup
from hub.periodic import attempt
from hub.services import Services

log = logging.getLogger("notifyhub")


async def prune_once(svc: Services) -> dict[str, int] | None:
    """Prune now; None if another instance holds the cleanup lock."""
    s = svc.settings
    return await cleanup.prune(
        svc.pool,
        retention_days=s.retention_days,
        history_days=s.history_days,
        history_min_events=s.history_min_events,
    )


async def run_forever(svc: Services) -> None:
    """Prune every ``cleanup_interval_seconds``; errors are logged and retried next time."""
    while True:
        await asyncio.sleep(svc.settings.cleanup_interval_seconds)
        result = await attempt("cleanup", lambda: prune_once(svc))
        if result:
            log.info("cleanup pruned %s", result)
