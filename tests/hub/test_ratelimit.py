"""Token buckets with an injected clock: no sleeping, no wall-clock assertions."""

from __future__ import annotations

import pytest

from hub.ratelimit import Bucket, RateLimiter


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_new_key_may_spend_its_whole_burst_then_is_refused_with_a_retry_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=2, burst=5, clock=clock)
    assert [limiter.allow("u1")[0] for _ in range(5)] == [True] * 5
    allowed, retry = limiter.allow("u1")
    assert not allowed
    assert retry == pytest.approx(0.5)  # one token at 2 per second


def test_tokens_refill_with_time_up_to_the_burst_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=2, burst=5, clock=clock)
    for _ in range(5):
        limiter.allow("u1")
    clock.advance(1.0)  # two tokens back
    assert [limiter.allow("u1")[0] for _ in range(3)] == [True, True, False]
    clock.advance(3600)  # a long idle time refills to the burst, not beyond
    assert [limiter.allow("u1")[0] for _ in range(6)] == [True] * 5 + [False]


def test_a_refused_call_spends_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=1, clock=clock)
    assert limiter.allow("u1") == (True, 0.0)
    for _ in range(10):
        assert not limiter.allow("u1")[0]
    clock.advance(1.0)
    assert limiter.allow("u1") == (True, 0.0)


def test_keys_have_independent_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=2, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, False]
    assert [limiter.allow("b")[0] for _ in range(3)] == [True, True, False]


def test_cost_takes_several_tokens_and_a_cost_above_the_burst_needs_a_full_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=4, clock=clock)
    assert limiter.allow("u1", cost=3)[0]
    allowed, retry = limiter.allow("u1", cost=3)
    assert not allowed and retry == pytest.approx(2.0)
    clock.advance(3)
    assert limiter.allow("u1", cost=100)[0]  # capped at the burst: never unpayable
    assert not limiter.allow("u1")[0]


def test_memory_is_bounded_by_max_keys() -> None:
    limiter = RateLimiter(rate_per_second=1, burst=1, max_keys=3, clock=FakeClock())
    for i in range(10):
        limiter.allow(f"k{i}")
        assert len(limiter) <= 3
    assert len(limiter) == 3


def test_the_least_recently_used_key_is_the_one_evicted() -> None:
    limiter = RateLimiter(rate_per_second=1, burst=1, max_keys=2, clock=FakeClock())
    limiter.allow("old")
    limiter.allow("kept")
    assert not limiter.allow("old")[0]  # touching "old" makes "kept" the oldest
    limiter.allow("new")  # evicts "kept"
    assert not limiter.allow("old")[0]  # still remembered, still empty
    assert limiter.allow("kept")[0]  # forgotten: starts again with a full bucket


def test_rate_zero_disables_the_limiter_and_stores_nothing() -> None:
    limiter = RateLimiter(rate_per_second=0, burst=1, clock=FakeClock())
    assert not limiter.enabled
    assert all(limiter.allow("u1") == (True, 0.0) for _ in range(1000))
    assert len(limiter) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=-1, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=1, burst=0)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=1, burst=1, max_keys=0)
    with pytest.raises(ValueError):
        Bucket(rate_per_second=1, burst=0)


def test_a_bucket_limits_one_connection_and_counts_refusals_in_a_row() -> None:
    clock = FakeClock()
    bucket = Bucket(rate_per_second=10, burst=3, clock=clock)
    assert [bucket.allow()[0] for _ in range(3)] == [True] * 3
    assert bucket.refused == 0
    for expected in (1, 2, 3):
        allowed, retry = bucket.allow()
        assert not allowed and retry == pytest.approx(0.1)
        assert bucket.refused == expected
    clock.advance(0.1)
    assert bucket.allow() == (True, 0.0)
    assert bucket.refused == 0


def test_a_bucket_with_rate_zero_allows_everything() -> None:
    bucket = Bucket(rate_per_second=0, burst=1, clock=FakeClock())
    assert not bucket.enabled
    assert all(bucket.allow()[0] for _ in range(1000))
    assert bucket.refused == 0


def test_a_clock_going_backwards_never_adds_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=1, clock=clock)
    assert limiter.allow("u1")[0]
    clock.advance(-100)
    assert not limiter.allow("u1")[0]
    clock.advance(100.5)  # back where it was, plus half a second: still half a token
    assert not limiter.allow("u1")[0]


@pytest.mark.parametrize("rate", [3.0, 0.1, 7.0, 1 / 3])
def test_rounding_never_refuses_a_token_that_is_there(rate: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=rate, burst=10, clock=clock)
    assert all(limiter.allow("u1")[0] for _ in range(10))
    assert not limiter.allow("u1")[0]
    for _ in range(5):
        clock.advance(1 / rate)  # exactly one token back each time
        assert limiter.allow("u1")[0]
        assert not limiter.allow("u1")[0]
