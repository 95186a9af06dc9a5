"""Token buckets: ``RateLimiter`` keeps one per key (bounded, LRU), ``Bucket`` is just one.

A bucket holds up to ``burst`` tokens and gains ``rate_per_second`` of them per second;
an action costing ``cost`` goes ahead when that many tokens are there. Both classes are
plain synchronous objects: no tasks, no awaits, no timers. A bucket is refilled lazily
from the time elapsed since it was last touched (``time.monotonic`` unless a clock is
injected), so each check is O(1) and an idle bucket costs nothing but its memory: one
float, the moment it will be full again.

Memory is bounded by ``max_keys``: the least recently used key is dropped to make room
for a new one. Dropping a key that has been idle for at least ``burst / rate_per_second``
seconds loses nothing, because its bucket would be full again by now, which is exactly
the state a new key starts in. Only when more than ``max_keys`` distinct keys are active
within that window (a flood of distinct keys) are buckets dropped before they refill; they
then start full again, so the limit turns lenient for those keys but memory stays
bounded, which is the guarantee that matters more. A rate of 0 disables a limiter: every
call is allowed and nothing is stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]

#: Default bound on the keys one limiter remembers (about 20 MiB at 200 bytes per key).
MAX_KEYS = 100_000
#: Float slack, so that spending exactly the burst is never refused by a rounding error.
_EPSILON = 1e-9


def _spend(full_at: float, now: float, rate: float, burst: int,
           cost: float) -> tuple[bool, float, float]:
    """Take ``cost`` tokens from a bucket that is full at ``full_at``.

    Returns ``(allowed, retry_after, new_full_at)``. A bucket is stored as the one
    moment it will be full again (the GCRA form of a token bucket): at ``now`` it
    holds ``burst - (full_at - now) * rate`` tokens, so one float is the whole state
    and refilling needs no bookkeeping.
    """
    full_at = max(full_at, now)
    # A cost above the burst could never be paid; it then needs a full bucket instead.
    after = full_at + min(cost, burst) / rate
    over = after - now - burst / rate
    if over > _EPSILON:
        return False, over, full_at
    return True, 0.0, after


def _check(rate_per_second: float, burst: int) -> None:
    if rate_per_second < 0:
        raise ValueError("rate_per_second must be >= 0 (0 disables the limit)")
    if burst < 1:
        raise ValueError("burst must be >= 1")


class Bucket:
    """One token bucket, e.g. for the frames of one WebSocket connection.

    ``refused`` counts the refusals since the last allowed action, so a caller can tell
    a client that brushes the limit from one that keeps hammering it.
    """

    __slots__ = ("rate", "burst", "refused", "_clock", "_full_at")

    def __init__(self, rate_per_second: float, burst: int, clock: Clock = time.monotonic) -> None:
        _check(rate_per_second, burst)
        self.rate = float(rate_per_second)
        self.burst = burst
        self.refused = 0
        self._clock = clock
        self._full_at = clock()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0: then every action is allowed."""
        return self.rate > 0

    def allow(self, cost: float = 1.0) -> tuple[bool, float]:
        """Take ``cost`` tokens: ``(True, 0.0)``, or ``(False, seconds until it would fit)``."""
        if self.rate <= 0:
            return True, 0.0
        allowed, retry, self._full_at = _spend(
            self._full_at, self._clock(), self.rate, self.burst, cost
        )
        self.refused = 0 if allowed else self.refused + 1
        return allowed, retry


class RateLimiter:
    """A token bucket per key (a user, an IP, an API key), at most ``max_keys`` of them."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        _check(rate_per_second, burst)
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = float(rate_per_second)
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        # key -> when its bucket is full again; least recently used first.
        self._buckets: OrderedDict[str, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0: then every call is allowed and nothing is stored."""
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, cost: float = 1.0) -> tuple[bool, float]:
        """Take ``cost`` tokens from ``key``'s bucket: ``(allowed, retry_after_seconds)``.

        ``retry_after_seconds`` is 0 when allowed, else how long until the same call
        would succeed if nothing else is spent meanwhile.
        """
        if self.rate <= 0:
            return True, 0.0
        now = self._clock()
        buckets = self._buckets
        full_at = buckets.get(key)
        if full_at is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)  # see the module docstring: safe
            full_at = now  # a new key starts with a full bucket
        else:
            buckets.move_to_end(key)
        allowed, retry, buckets[key] = _spend(full_at, now, self.rate, self.burst, cost)
        return allowed, retry
