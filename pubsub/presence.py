"""The PresenceStore protocol: who holds a live connection on some hub instance.

A user is **online** while at least one instance holds a connection of theirs (and
keeps saying so with ``arrive``, its heartbeat), and also during the debounce after
their last connection everywhere closed: a page reload (close, then open again within
the debounce) never shows as offline. ``settle`` claims the users whose offline is due,
so exactly one instance announces each: those whose debounce ran out while they stayed
offline, and those whose instances stopped refreshing (died) for longer than the TTL.

Times are seconds since the epoch; the Redis store takes them from the Redis server's
clock, so instances with skewed clocks agree. ``MemoryPresence`` (one process) sits
here beside the protocol; ``pubsub.redis_presence.RedisPresence`` is the shared one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

#: Users per ``settle`` answer at most; the caller asks again when it got a full one.
SETTLE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Seen:
    """A user's presence: ``online``, and when their last connection closed (epoch
    seconds; None while online, or when it is unknown or forgotten)."""

    online: bool
    last_seen: float | None


class PresenceStore(Protocol):
    """Presence shared by the hub instances (see the module docstring).

    Every method may raise ``pubsub.errors.BrokerUnavailable`` when the store's server
    cannot be reached; nothing changed then, and the caller tries again later.
    """

    async def start(self) -> None:
        """Connect (returns at once; a server that is down fails the first call)."""

    async def stop(self) -> None:
        """Disconnect; what this instance holds expires after the TTL on its own."""

    async def arrive(self, user_ids: list[str]) -> list[str]:
        """This instance holds connections of ``user_ids``, for another TTL; returns
        those who came online (neither online elsewhere nor within the debounce of
        leaving). Also the heartbeat: every third of the TTL for every local user, when
        it returns those whose entry had lapsed (their instance stalled past the TTL and
        they were settled as offline meanwhile)."""
        ...

    async def leave(self, user_ids: list[str]) -> None:
        """This instance holds none of their connections any more; a user then offline
        everywhere has their last-seen time set and is due for ``settle`` after the
        debounce, unless they arrive again before."""

    async def settle(self) -> list[tuple[str, float | None]]:
        """Claim up to ``SETTLE_BATCH`` users whose offline is due (debounce over, still
        offline; or their instance stopped refreshing for a TTL) as
        ``(user_id, last_seen)``: each claimed by exactly one caller, once."""
        ...

    async def lookup(self, user_ids: list[str]) -> dict[str, Seen]:
        """The presence of each of ``user_ids``."""
        ...


class MemoryPresence:
    """Presence of one process (beside the in-process broker): no other instance, so
    nothing dies unseen and no entry lapses."""

    def __init__(
        self, *, debounce: float = 5.0, seen_ttl: float = 30 * 86400.0,
        max_seen: int = 100_000,
    ) -> None:
        self.debounce, self.seen_ttl, self.max_seen = debounce, seen_ttl, max_seen
        self._online: set[str] = set()
        #: Users within the debounce of leaving, with when their offline is due.
        self._leaving: dict[str, float] = {}
        #: Last-seen times, oldest first (re-inserted on update), at most ``max_seen``.
        self._seen: dict[str, float] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._online.clear()

    async def arrive(self, user_ids: list[str]) -> list[str]:
        came = []
        for user in user_ids:
            if user in self._online:
                continue
            self._online.add(user)
            if self._leaving.pop(user, None) is None:
                came.append(user)
        return came

    async def leave(self, user_ids: list[str]) -> None:
        now = time.time()
        for user in user_ids:
            if user not in self._online:
                continue
            self._online.discard(user)
            self._leaving[user] = now + self.debounce
            self._seen.pop(user, None)
            self._seen[user] = now
        while len(self._seen) > self.max_seen:
            del self._seen[next(iter(self._seen))]

    async def settle(self) -> list[tuple[str, float | None]]:
        now = time.time()
        due = [u for u, at in self._leaving.items() if at <= now][:SETTLE_BATCH]
        for user in due:
            del self._leaving[user]
        while self._seen and next(iter(self._seen.values())) < now - self.seen_ttl:
            del self._seen[next(iter(self._seen))]
        return [(user, self._seen.get(user)) for user in due]

    async def lookup(self, user_ids: list[str]) -> dict[str, Seen]:
        return {
            user: Seen(True, None) if user in self._online or user in self._leaving
            else Seen(False, self._seen.get(user))
            for user in user_ids
        }
