"""Which live connections this instance holds, by user; no I/O.

The node subscribes a user's channel when ``add`` reports the user's first connection
and unsubscribes when ``remove`` reports the last. Both calls, and the (un)subscribe
that follows, run under ``guard(user_id)`` so a quick disconnect and reconnect cannot
interleave into "connection registered, channel unsubscribed". ``add`` also enforces
the per-user connection cap: the check and the registration are one synchronous step,
so concurrent connects of one user can never overshoot it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from hub.connection import Connection
from hub.errors import RateLimited

#: What a user over the connection cap is told to wait (one of theirs must close first).
CAP_RETRY_SECONDS = 5.0


@dataclass(eq=False)
class _Guard:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters; the guard goes away with the last


class Registry:
    """The connections of this instance, grouped by user id, at most ``max_per_user`` each."""

    def __init__(self, max_per_user: int | None = None) -> None:
        self.max_per_user = max_per_user
        self._by_user: dict[str, set[Connection]] = {}
        self._guards: dict[str, _Guard] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, conn: object) -> bool:
        return isinstance(conn, Connection) and conn in self._by_user.get(conn.user_id, ())

    def __iter__(self) -> Iterator[Connection]:
        """Every connection (iterate a copy if the loop body may add or remove)."""
        for conns in self._by_user.values():
            yield from conns

    @property
    def users(self) -> int:
        """Users with at least one connection here."""
        return len(self._by_user)

    def user_ids(self) -> list[str]:
        """A snapshot of the users with at least one connection here."""
        return list(self._by_user)

    def of(self, user_id: str) -> tuple[Connection, ...]:
        """A snapshot of ``user_id``'s connections."""
        conns = self._by_user.get(user_id)
        return tuple(conns) if conns else ()

    def count(self, user_id: str) -> int:
        """How many connections ``user_id`` has here."""
        return len(self._by_user.get(user_id, ()))

    def add(self, conn: Connection) -> bool:
        """Register ``conn``; True if it is its user's first connection here.

        RateLimited (and nothing registered) when its user already has ``max_per_user``.
        """
        conns = self._by_user.get(conn.user_id)
        if conns is None:
            conns = self._by_user[conn.user_id] = set()
        elif conn in conns:
            return False
        elif self.max_per_user is not None and len(conns) >= self.max_per_user:
            raise RateLimited(
                f"too many live connections: at most {self.max_per_user} per user",
                retry_after=CAP_RETRY_SECONDS,
            )
        conns.add(conn)
        self._count += 1
        return len(conns) == 1

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; True if it was its user's last connection here."""
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self._count -= 1
        if conns:
            return False
        del self._by_user[conn.user_id]
        return True

    @asynccontextmanager
    async def guard(self, user_id: str) -> AsyncIterator[None]:
        """Hold ``user_id``'s subscription lock (created on demand, dropped when unused)."""
        guard = self._guards.get(user_id)
        if guard is None:
            guard = self._guards[user_id] = _Guard()
        guard.users += 1
        try:
            async with guard.lock:
                yield
        finally:
            guard.users -= 1
            if guard.users == 0:
                del self._guards[user_id]

    @property
    def guards(self) -> int:
        """Locks alive now (for tests: none once nobody connects or disconnects)."""
        return len(self._guards)
