"""The token bucket, with a fake clock: messages per second and per hour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from newsletter.sending.ratelimit import RateLimiter, RateSpec

if TYPE_CHECKING:
    from newsletter.sending.sharedrate import SharedRateLimiter


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


# --- shared by several senders through the database -----------------------------------------


def _two_senders(
    url: str, edition_id: int, spec: RateSpec, clock: FakeClock
) -> list[SharedRateLimiter]:
    from newsletter.sending.sharedrate import SharedRateLimiter
    from newsletter.storage.database import make_engine

    # Two engines: as two worker processes would have.
    return [
        SharedRateLimiter(make_engine(url), edition_id, spec, clock=clock, sleep=clock.sleep)
        for _ in range(2)
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_senders_share_one_edition_allowance(
    database: str, settings: Any, draft: int, request: pytest.FixtureRequest
) -> None:
    url = settings.database_url
    edition_id = draft
    if database == "postgresql":
        from sqlmodel import Session

        from newsletter import publish
        from newsletter.audience.importing import import_comparisons
        from newsletter.storage.database import make_engine, upgrade

        from .conftest import EXAMPLES

        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        upgrade(engine)
        with Session(engine) as session:
            publish.default_newsletter(session, settings)
            import_comparisons(session, path=EXAMPLES)
            session.commit()
            edition_id = (
                publish.draft_edition(
                    session,
                    settings=settings,
                    newsletter_slug=None,
                    at=datetime(2026, 11, 25, tzinfo=UTC),
                ).edition.id
                or 0
            )
        engine.dispose()
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    start = clock.now
    a, b = _two_senders(url, edition_id, RateSpec(per_second=10), clock)
    for _ in range(10):  # 100 messages, alternating senders, 5 at a time
        a.acquire(5)
        b.acquire(5)
    # One bucket of 10/s for both (burst 10): 100 messages take at least 9 s, not 4.5.
    assert clock.now - start >= 9.0 - 1e-6
    a.engine.dispose()
    b.engine.dispose()


def test_two_senders_share_the_hourly_quota(settings: Any, draft: int) -> None:
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    a, b = _two_senders(settings.database_url, draft, RateSpec(per_hour=100), clock)
    a.acquire(60)
    assert clock.slept == []
    b.acquire(50)  # only 40 left this hour: waits for the next one
    assert clock.slept and sum(clock.slept) == pytest.approx(3600)
    a.engine.dispose()
    b.engine.dispose()


def test_a_rate_limited_send_spends_from_the_editions_bucket(
    seeded: Any, settings: Any, draft: int, add_subscribers: Any
) -> None:
    from sqlmodel import select

    from newsletter import publish
    from newsletter.backends.memory import MemoryBackend
    from newsletter.storage.models import RateBucket

    add_subscribers(30)
    limited = settings.model_copy(update={"rate_limit": "1000/s,50000/h"})
    report = publish.send_edition(
        seeded, edition_id=draft, settings=limited, backend=MemoryBackend()
    )
    assert report.run.sent == 30
    bucket = seeded.exec(select(RateBucket).where(RateBucket.edition_id == draft)).one()
    assert bucket.hour_used == 30 and bucket.version >= 1
