"""The token bucket, with a fake clock: messages per second and per hour."""

from __future__ import annotations

import pytest

from newsletter.ratelimit import RateLimiter, RateSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_parse() -> None:
    assert RateSpec.parse("") == RateSpec()
    assert RateSpec.parse("100/s, 50000/h") == RateSpec(100.0, 50000)
    for bad in ["fast", "10/min", "-1/s", "0/h"]:
        with pytest.raises(ValueError):
            RateSpec.parse(bad)


def test_per_second_rate_is_kept() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateSpec(per_second=10), clock=clock, sleep=clock.sleep)
    assert limiter.chunk_size(500) == 10
    for _ in range(10):  # 100 messages in chunks of 10
        limiter.acquire(10)
    assert 8.9 <= clock.now <= 9.1  # the first 10 are a burst; 90 more take 9 s


def test_hourly_quota_waits_for_the_next_hour() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateSpec(per_hour=100), clock=clock, sleep=clock.sleep)
    limiter.acquire(60)
    limiter.acquire(40)
    assert clock.now == 0
    limiter.acquire(1)
    assert clock.now == pytest.approx(3600)


def test_unlimited_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateSpec(), clock=clock, sleep=clock.sleep)
    limiter.acquire(10_000)
    assert clock.slept == [] and limiter.chunk_size(500) == 500
