"""The subscribe form can't be turned against a person or the sender's reputation.

A stranger may post someone's address again and again: that person gets at most one
confirmation an hour and ``confirm_limit`` a week. A flood of signups stops at
``signup_limit`` confirmations an hour, site-wide, storing nothing past it. A signup nobody
confirms is forgotten after ``pending_days`` (it is personal data without consent). Every
time here comes from a pinned, movable clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.audience import subscriptions
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.service import scheduler
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import (
    Delivery,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    table_of,
)
from newsletter.web.app import create_app

from .conftest import SECRET

START = datetime(2026, 11, 23, 9, tzinfo=UTC)
#: The Core table, for the updates that pin a row's own timestamps.
_SUBSCRIPTIONS = table_of(Subscription)


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


class MovableClock:
    """A clock a test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(START)


def _client(settings: Settings, engine: Engine, clock: MovableClock) -> TestClient:
    """The app on ``clock``; the per-client limit is raised out of the way (tested elsewhere)."""
    open_form = settings.model_copy(update={"subscribe_limit": 10_000})
    return TestClient(
        create_app(open_form, engine=engine, clock=clock),
        base_url="https://news.example.com",
        follow_redirects=False,
    )


@pytest.fixture
def client(
    settings: Settings, engine: Engine, seeded: Session, clock: MovableClock
) -> Iterator[TestClient]:
    with _client(settings, engine, clock) as c:
        yield c


def _person(session: Session, email: str) -> Subscriber | None:
    session.expire_all()
    return session.exec(select(Subscriber).where(Subscriber.email_key == email)).first()


def test_one_address_gets_at_most_three_confirmations_a_week(
    client: TestClient, clock: MovableClock
) -> None:
    """48 posts an hour apart used to mean 48 emails in 48 hours; now 3 a week."""
    for _ in range(48):
        assert client.post("/subscribe", data={"email": "victim@example.com"}).status_code == 200
        clock.advance(timedelta(hours=1, minutes=1))
    assert [m.recipient for m in memory.outbox] == ["victim@example.com"] * 3
    # A week after the first, the window starts again: a real person can still sign up later.
    clock.at = START + subscriptions.CONFIRM_WINDOW + timedelta(minutes=1)
    client.post("/subscribe", data={"email": "victim@example.com"})
    assert len(memory.outbox) == 4


def test_the_weekly_cap_is_a_setting(
    settings: Settings, engine: Engine, seeded: Session, clock: MovableClock
) -> None:
    one = settings.model_copy(update={"confirm_limit": 1})
    with _client(one, engine, clock) as c:
        for _ in range(5):
            c.post("/subscribe", data={"email": "victim@example.com"})
            clock.advance(timedelta(hours=2))
    assert len(memory.outbox) == 1


def test_the_capped_page_is_the_same_page(client: TestClient, clock: MovableClock) -> None:
    """Capped or not, the form answers the same: it reveals nothing about the address."""
    pages = set()
    for _ in range(5):
        answer = client.post("/subscribe", data={"email": "victim@example.com"})
        pages.add((answer.status_code, answer.text))
        clock.advance(timedelta(hours=2))
    assert len(pages) == 1 and len(memory.outbox) == 3


def test_a_failed_confirmation_gives_back_the_week_slot_too(
    settings: Settings, engine: Engine, seeded: Session, clock: MovableClock
) -> None:
    failing = settings.model_copy(update={"mail_backend": "memory://?reject=x@example.com"})
    with _client(failing, engine, clock) as c:
        for _ in range(4):
            c.post("/subscribe", data={"email": "x@example.com"})
    person = _person(seeded, "x@example.com")
    assert person is not None
    assert person.confirm_sent_at is None and person.confirm_count == 0


def test_a_flood_of_signups_stops_at_the_hourly_ceiling_and_stores_nothing_past_it(
    settings: Settings, engine: Engine, seeded: Session, clock: MovableClock
) -> None:
    capped = settings.model_copy(update={"signup_limit": 3})
    with _client(capped, engine, clock) as c:
        answers = [c.post("/subscribe", data={"email": f"flood{i}@example.com"}) for i in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 503, 503]
        assert "try again" in answers[3].text and "Nothing was stored" in answers[3].text
        assert len(memory.outbox) == 3
        assert _person(seeded, "flood3@example.com") is None  # stored nothing
        # An hour later the ceiling has room again.
        clock.advance(subscriptions.SIGNUP_WINDOW + timedelta(seconds=1))
        assert c.post("/subscribe", data={"email": "late@example.com"}).status_code == 200
    assert len(memory.outbox) == 4


def test_the_ceiling_also_holds_when_it_fills_between_page_and_signup(
    seeded: Session,
) -> None:
    """The page's check and the recording are separate steps; the recording checks again."""
    limits = subscriptions.SignupLimits(per_hour=1)
    known = {n.slug: n for n in seeded.exec(select(Newsletter)).all()}
    first, second = (
        subscriptions.parse_signup(email=e, name=None, slugs=[], newsletters=known)
        for e in ("a@example.com", "b@example.com")
    )
    assert subscriptions.request_signup(seeded, first, now=START, limits=limits) is not None
    with pytest.raises(subscriptions.SignupsFull):
        subscriptions.request_signup(seeded, second, now=START, limits=limits)


# --- unconfirmed signups are forgotten ---------------------------------------------------------


def _signup(session: Session, email: str, at: datetime) -> int:
    known = {n.slug: n for n in session.exec(select(Newsletter)).all()}
    signup = subscriptions.parse_signup(email=email, name="Kim", slugs=[], newsletters=known)
    subscriber_id = subscriptions.request_signup(session, signup, now=at)
    assert subscriber_id is not None
    session.execute(  # the row's own timestamp, pinned like everything else
        _SUBSCRIPTIONS.update()
        .where(_SUBSCRIPTIONS.c.subscriber_id == subscriber_id)
        .values(updated_at=at, created_at=at)
    )
    session.commit()
    return subscriber_id


def test_unconfirmed_signups_are_forgotten_after_pending_days(
    seeded: Session, settings: Settings
) -> None:
    old = _signup(seeded, "stranger@example.com", START - timedelta(days=8))
    recent = _signup(seeded, "thinking@example.com", START - timedelta(days=6))
    forgotten = subscriptions.expire_pending(seeded, now=START, keep_days=7)
    seeded.commit()
    assert forgotten == 1
    assert seeded.get(Subscriber, old) is None
    assert not seeded.exec(
        select(SubscriptionEvent).where(SubscriptionEvent.subscriber_id == old)
    ).all()
    assert seeded.get(Subscriber, recent) is not None


def test_forgetting_keeps_what_something_else_holds(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    draft: int,
) -> None:
    """A reader of one list whose signup to another went unconfirmed stays a reader; a
    suppressed address stays suppressed; an address with deliveries stays for the ledger."""
    (reader,) = add_subscribers(1, prefix="reader")
    other = Newsletter(
        slug="daily", name="Daily", timezone="UTC", site_url="https://aitoolverdicts.example"
    )
    seeded.add(other)
    seeded.commit()
    assert reader.id is not None and other.id is not None
    seeded.add(Subscription(subscriber_id=reader.id, newsletter_id=other.id, status="pending"))
    suppressed = Subscriber(email="gone@example.com", email_key="gone@example.com")
    suppressed.suppressed = subscriptions.COMPLAINED
    mailed = Subscriber(email="mailed@example.com", email_key="mailed@example.com")
    seeded.add_all([suppressed, mailed])
    seeded.flush()
    assert suppressed.id is not None and mailed.id is not None
    seeded.add_all(
        [
            Subscription(subscriber_id=suppressed.id, newsletter_id=other.id, status="pending"),
            Subscription(subscriber_id=mailed.id, newsletter_id=other.id, status="pending"),
            Delivery(edition_id=draft, subscriber_id=mailed.id, status="sent"),
        ]
    )
    seeded.execute(
        _SUBSCRIPTIONS.update()
        .where(_SUBSCRIPTIONS.c.status == "pending")
        .values(updated_at=START - timedelta(days=30))
    )
    seeded.commit()
    assert subscriptions.expire_pending(seeded, now=START, keep_days=7) == 0
    seeded.commit()
    seeded.expire_all()
    for person in (reader, suppressed, mailed):
        assert seeded.get(Subscriber, person.id) is not None
    statuses = {
        (s.subscriber_id, s.newsletter_id): s.status
        for s in seeded.exec(select(Subscription)).all()
    }
    assert (
        statuses[(reader.id or 0, publish.default_newsletter(seeded, settings).id or 0)] == "active"
    )
    assert (reader.id, other.id) not in statuses  # the stale pending row went
    kinds = [
        e.kind
        for e in seeded.exec(
            select(SubscriptionEvent).where(SubscriptionEvent.subscriber_id == reader.id)
        )
    ]
    assert kinds == ["expired"]


def test_the_scheduler_forgets_unconfirmed_signups_on_its_tick(
    seeded: Session, settings: Settings
) -> None:
    old = _signup(seeded, "stranger@example.com", START - timedelta(days=10))
    done = scheduler.tick(seeded, settings, now=START)
    assert "forgot 1 unconfirmed signups older than 7 days" in done
    assert seeded.get(Subscriber, old) is None
    # Nothing left to forget: the tick says nothing about it.
    assert not [d for d in scheduler.tick(seeded, settings, now=START) if "forgot" in d]


def test_subscribers_expire_command(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    settings = Settings(
        database_url=f"sqlite:///{db}",
        secret_key=SECRET,
        _env_file=None,
    )
    with Session(engine) as session:
        publish.default_newsletter(session, settings)
        session.commit()
        _signup(session, "stranger@example.com", datetime(2001, 1, 1, tzinfo=UTC))
        _signup(session, "fresh@example.com", datetime(2099, 1, 1, tzinfo=UTC))
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_DATABASE_URL=f"sqlite:///{db}", NEWSLETTER_SECRET_KEY=SECRET)
    out = subprocess.run(
        [sys.executable, "-m", "newsletter.cli", "subscribers", "expire", "--days", "30"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "forgot 1 unconfirmed signups older than 30 days\n"
    engine = make_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        left = session.exec(select(Subscriber.email_key).order_by(col(Subscriber.id))).all()
        pending = session.exec(
            select(Subscription).where(Subscription.status == SubscriptionStatus.pending)
        ).all()
    engine.dispose()
    assert left == ["fresh@example.com"] and len(pending) == 1
