"""A person's data on request, and erasure that keeps only a hashed suppression."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter import publish
from newsletter.audience import importing, privacy, subscriptions
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.storage.models import ERASED, Newsletter, Subscriber, SubscriptionEvent, erased_key
from tests.conftest import IMPORTED_AT


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL (erasure rewrites rows both hold)."""
    return both_database_url


NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)


def test_a_persons_data_is_everything_stored_about_them(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    (person,) = add_subscribers(1, prefix="kim")
    publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=memory.MemoryBackend()
    )
    data = privacy.person_data(seeded, subscriber_id=person.id or 0)
    json.dumps(data)  # JSON-ready
    assert data["subscriber"]["email"] == "kim0@example.com"
    assert data["subscriptions"][0]["newsletter"] == "weekly-ai-tool-verdicts"
    assert data["deliveries"] == [
        {"edition": draft, "status": "sent", "at": data["deliveries"][0]["at"]}
    ]


def test_erasure_removes_the_data_and_nothing_brings_the_person_back(
    seeded: Session,
    settings: Settings,
    tmp_path: Path,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    (person,) = add_subscribers(1, prefix="kim")
    person.name = "Kim Example"
    seeded.commit()
    privacy.erase(seeded, subscriber_id=person.id or 0, now=NOW, source="operator")
    seeded.commit()
    seeded.refresh(person)
    assert "kim0" not in person.email and person.name is None
    assert person.email_key == erased_key("kim0@example.com")
    assert person.suppressed == ERASED
    assert all("kim" not in (e.detail or "") for e in seeded.exec(select(SubscriptionEvent)).all())
    # An import of the same address adds nothing and stores no name again.
    csv = tmp_path / "s.csv"
    csv.write_text("email,name\nKim0@Example.com,Kim Again\n")
    report = importing.import_subscribers(
        seeded, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
    )
    seeded.commit()
    assert report.created == 0 and report.suppressed == 1
    seeded.refresh(person)
    assert person.name is None
    assert (
        seeded.exec(select(Subscriber).where(Subscriber.email_key == "kim0@example.com")).first()
        is None
    )
    # The subscribe form sends them nothing either.
    known = {n.slug: n for n in seeded.exec(select(Newsletter)).all()}
    signup = subscriptions.parse_signup(
        email="kim0@example.com", name=None, slugs=[], newsletters=known
    )
    assert subscriptions.request_signup(seeded, signup, now=NOW) is None
    assert (
        seeded.exec(select(Subscriber).where(Subscriber.email_key == "kim0@example.com")).first()
        is None
    )
