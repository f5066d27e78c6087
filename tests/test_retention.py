"""Pruning the delivery ledger keeps every figure: stats, status counts and per-edition
reports are the same before and after the rows of an old edition are deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter import publish
from newsletter.backends.memory import MemoryBackend
from newsletter.cli import app
from newsletter.cli.common import CLI_CLOCK
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.operations.stats import edition_stats
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import Delivery, EditionTotals, MailEvent, Subscriber

SENT_AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


def _prune(settings: Settings, *args: str, at: datetime) -> Any:
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url}
    pinned = CLI_CLOCK.set(fixed_clock(at))
    try:
        return CliRunner().invoke(app, ["ledger", "prune", *args], env=env)
    finally:
        CLI_CLOCK.reset(pinned)


def test_pruning_an_old_edition_keeps_its_figures(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(6)
    backend = MemoryBackend(reject=frozenset({people[0].email}))  # a 550: a hard bounce
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=backend,
        options=publish.SendOptions(clock=fixed_clock(SENT_AT)),
    )
    assert store.get_edition(seeded, edition_id=draft).status == "sent"
    before_counts = ledger.counts(seeded, edition_id=draft)
    (before_stats,) = edition_stats(seeded)
    assert before_stats.sent == 5 and before_stats.bounced_hard == 1

    # Too recent for a 30-day retention: nothing goes.
    early = _prune(settings, "--days", "30", "--yes", at=SENT_AT + timedelta(days=2))
    assert early.exit_code == 0 and early.stdout.startswith("nothing to prune")
    # No terminal and no --yes: refused in one line, nothing deleted.
    unconfirmed = _prune(settings, "--days", "1", at=SENT_AT + timedelta(days=2))
    assert unconfirmed.exit_code == 1 and len(unconfirmed.output.splitlines()) == 1
    assert "--yes" in unconfirmed.output
    # Neither --days nor the setting.
    unset = _prune(settings, "--yes", at=SENT_AT + timedelta(days=2))
    assert unset.exit_code == 1 and "NEWSLETTER_DELIVERY_RETENTION_DAYS" in unset.output

    done = _prune(settings, "--days", "1", "--yes", at=SENT_AT + timedelta(days=2))
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("pruned 6 delivery rows of 1 editions")
    seeded.expire_all()
    assert seeded.exec(select(Delivery).where(Delivery.edition_id == draft)).all() == []
    kept = seeded.get(EditionTotals, draft)
    assert kept is not None and kept.pruned_rows == 6
    # The figures are the same, read from what was kept.
    assert ledger.counts(seeded, edition_id=draft) == before_counts
    assert edition_stats(seeded) == [before_stats]
    # The bounce still belongs to the edition (its delivery row is gone).
    (event,) = seeded.exec(select(MailEvent)).all()
    assert (event.edition_id, event.delivery_id) == (draft, None)
    bounced = seeded.exec(select(Subscriber).where(Subscriber.email == people[0].email)).one()
    assert bounced.suppressed == "bounced"
    again = _prune(settings, "--days", "1", "--yes", at=SENT_AT + timedelta(days=3))
    assert again.stdout.startswith("nothing to prune")


def test_a_send_still_going_is_never_pruned(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(3)
    publish.start_edition(seeded, edition_id=draft, settings=settings, now=SENT_AT)
    result = _prune(settings, "--days", "1", "--yes", at=SENT_AT + timedelta(days=400))
    assert result.stdout.startswith("nothing to prune")
    assert len(seeded.exec(select(Delivery)).all()) == 3


def test_a_prune_stopped_midway_keeps_counts_and_rows_consistent(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.operations import retention

    add_subscribers(7)
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend(),
        options=publish.SendOptions(clock=fixed_clock(SENT_AT)),
    )
    before = ledger.counts(seeded, edition_id=draft)
    monkeypatch.setattr(retention, "BATCH", 3)
    real_keep = retention._keep
    calls = 0

    def keep_then_die(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # the operator's Ctrl-C in the second batch
        real_keep(*args)

    monkeypatch.setattr(retention, "_keep", keep_then_die)
    with pytest.raises(KeyboardInterrupt):
        retention.prune(seeded, older_than=SENT_AT + timedelta(days=1), now=SENT_AT)
    seeded.rollback()
    seeded.expire_all()
    # Three rows went with their counts; the second batch rolled back whole.
    assert len(seeded.exec(select(Delivery).where(Delivery.edition_id == draft)).all()) == 4
    assert ledger.counts(seeded, edition_id=draft) == before
    monkeypatch.setattr(retention, "_keep", real_keep)
    retention.prune(seeded, older_than=SENT_AT + timedelta(days=1), now=SENT_AT)
    seeded.expire_all()
    assert seeded.exec(select(Delivery).where(Delivery.edition_id == draft)).all() == []
    assert ledger.counts(seeded, edition_id=draft) == before
    # Nothing left to retry, and the operator is told why.
    with pytest.raises(publish.EditionStateError, match="were pruned"):
        publish.retry_failed(seeded, edition_id=draft)


def test_a_complaint_after_the_prune_still_suppresses(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    from newsletter.edition.verp import DeliveryRef
    from newsletter.feedback import bounces
    from newsletter.webhooks.base import EventKind, ProviderEvent

    (person,) = add_subscribers(1)
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend(),
        options=publish.SendOptions(clock=fixed_clock(SENT_AT)),
    )
    done = _prune(settings, "--days", "1", "--yes", at=SENT_AT + timedelta(days=2))
    assert done.exit_code == 0, done.output
    # A week later a feedback loop reports a complaint, naming the delivery by its signed
    # return path (the row is gone).
    complaint = ProviderEvent(
        provider="arf",
        event_id="late-1",
        kind=EventKind.complained,
        email="redacted",
        provider_message_id=None,
        occurred_at=SENT_AT + timedelta(days=7),
        detail="abuse",
        delivery=DeliveryRef(draft, person.id or 0),
        match_email=False,
    )
    outcome = bounces.apply_events(seeded, [complaint], soft_limit=3)
    seeded.commit()
    assert outcome["complained"] == 1
    seeded.expire_all()
    assert seeded.get_one(Subscriber, person.id).suppressed == "complained"
    (event,) = seeded.exec(select(MailEvent)).all()
    assert (event.edition_id, event.delivery_id) == (draft, None)
    (row,) = edition_stats(seeded)
    assert row.complaints == 1
