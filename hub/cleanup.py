"""The retention task: periodically prunes what the configured history no longer needs."""

from __future__ import annotations

import asyncio
import logging

from db import cleanup
from db.errors import DatabaseUnavailable
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
        try:
            result = await prune_once(svc)
            if result:
                log.info("cleanup pruned %s", result)
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable as exc:  # an outage, not a bug: one line, no traceback
            log.warning("cleanup: database unavailable (%s); will retry", exc)
        except Exception:
            log.exception("cleanup failed; will retry")
