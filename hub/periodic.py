"""Background steps that outlive outages: one place decides how a failed step is logged.

A database or Redis outage is expected in a background task (cleanup, expiry, the
announcement and notification schedulers): it is logged in one WARNING line and the
step is tried again next time. Anything else is a bug and keeps its traceback; the task
goes on either way. ``run_when_due`` is the schedulers' loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from db.errors import DatabaseUnavailable
from pubsub.errors import BrokerUnavailable

log = logging.getLogger("notifyhub")

T = TypeVar("T")


async def attempt(name: str, step: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``step`` once; its result, or None after logging why it failed."""
    try:
        return await step()
    except asyncio.CancelledError:
        raise
    except (DatabaseUnavailable, BrokerUnavailable) as exc:
        dependency = "Redis" if isinstance(exc, BrokerUnavailable) else "database"
        log.warning("%s: %s unavailable (%s); will retry", name, dependency, exc)
    except Exception:
        log.exception("%s failed; will retry", name)
    return None


#: The shortest sleep between a scheduler's steps, so an overdue row can never cause a
#: busy loop.
MIN_SLEEP_SECONDS = 0.05


async def run_when_due(
    name: str,
    step: Callable[[], Awaitable[float | None]],
    *,
    recheck_seconds: float,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``step`` whenever it is due; runs until cancelled.

    ``step`` does what is due and returns the seconds until something else is (None:
    nothing known). The loop sleeps that long, but never longer than
    ``recheck_seconds`` (so work stored by other instances meanwhile is found) nor less
    than ``MIN_SLEEP_SECONDS``; setting ``wake`` ends the sleep at once. A failed step
    (``attempt``) is tried again after ``recheck_seconds``.
    """
    while True:
        if wake is not None:
            wake.clear()  # before the step: a wake-up during it is not lost
        delay = await attempt(name, step)
        if delay is None:
            delay = recheck_seconds
        timeout = min(max(delay, MIN_SLEEP_SECONDS), recheck_seconds)
        if wake is None:
            await asyncio.sleep(timeout)
            continue
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()
