"""Waiting in tests for something that happens in the background, with a bound."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

#: Seconds ``eventually`` waits unless told otherwise.
TIMEOUT = 10


async def eventually(check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``check`` (sync or async) until it gives something truthy; fail after ``timeout``."""

    async def poll() -> Any:
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)
