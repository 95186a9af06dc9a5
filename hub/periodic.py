"""Background steps that outlive outages: one place decides how a failed step is logged.

A database or Redis outage is expected in a background task (cleanup, expiry, the
announcement scheduler): it is logged in one WARNING line and the step is tried again
next time. Anything else is a bug and keeps its traceback; the task goes on either way.
"""

from __future__ import annotations

import asyncio
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
