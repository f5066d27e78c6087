"""The send's guarantees under timing (issue 10): a live sender keeps its batch however slow
it is, a dead one's batch is taken over at once, an edition's state changes are
compare-and-set, and an edition that ends with unknown deliveries says so.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends import SendResult, SendStatus, memory
from newsletter.backends.base import MailBackend
from newsletter.backends.memory import MemoryBackend
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.sending import journal, ledger
from newsletter.sending.dispatch import HANDED_OVER
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import (
    Delivery,
    DeliveryStatus,
    EditionStatus,
    Subscriber,
    Subscription,
)
from newsletter.web.app import create_app
from tests.conftest import EXAMPLES


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


def test_a_slow_sender_keeps_its_batch_past_the_lease(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    """The reported reproduction, scaled down: batches that take longer to send than the lease
    (a rate limit), two senders. Before, the second claimed the first one's rows when the lease
    ran out and both sent them (1,080 messages for 1,000 people, exit 0)."""
    add_subscribers(400)
    slow = settings.model_copy(
        update={"rate_limit": "100/s", "batch_size": 100, "lease_seconds": 0.5}
    )
    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=slow,
        backend=MemoryBackend,
        options=publish.SendOptions(concurrency=2, wait=True),
    )
    per_person = Counter(m.recipient for m in memory.outbox)
    assert len(per_person) == 400 and set(per_person.values()) == {1}
    assert report.totals["sent"] == 400 and report.edition.status == EditionStatus.sent
    # A sender stalled past its lease on a loaded machine may find part of its claim taken
    # over: it then leaves that part alone (counted), so nobody is mailed twice either way.
    assert report.run.unrecorded == 0


def test_a_record_that_finds_its_claim_gone_is_counted(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    """Never silent: an answer whose delivery another sender took over is counted and named
    in the run's errors (and the other sender's record stands)."""
    add_subscribers(4)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    batch = ledger.claim_batch(
        seeded,
        edition_id=draft,
        newsletter_id=1,
        after_id=0,
        limit=10,
        owner="me",
        lease_seconds=1,
        now=now,
    )
    seeded.execute(update(Delivery).values(lease_owner="someone-else"))
    seeded.commit()
    outcomes = [ledger.Outcome(d.id, DeliveryStatus.sent) for d in batch]
    assert ledger.record(seeded, outcomes=outcomes, owner="me", now=now) == 0
    assert (
        ledger.renew(seeded, ids=[d.id for d in batch], owner="me", now=now, lease_seconds=5)
        == set()
    )


def test_a_dead_senders_batch_is_taken_over_at_once(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, tmp_path: Path
) -> None:
    """A sender whose journal lock is free is dead: what it handed over is recorded (unknown),
    the rest of its claim goes back to the queue now, not after its five-minute lease."""
    add_subscribers(6)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    now = datetime.now(UTC)
    batch = ledger.claim_batch(
        seeded,
        edition_id=draft,
        newsletter_id=1,
        after_id=0,
        limit=6,
        owner="dead-sender",
        lease_seconds=300,
        now=now,
    )
    directory = settings.journal_path()
    assert directory is not None
    dead = journal.ResultJournal(directory, "dead-sender")
    dead.write(
        ledger.Outcome(batch[0].id, DeliveryStatus.unknown, detail=HANDED_OVER, message_id="<x>")
    )
    dead.abandon()  # killed: the lock is gone, the file stays
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert (report.totals["sent"], report.totals["unknown"]) == (5, 1), report.totals
    assert report.totals["claimed"] == 0 and report.edition.status == EditionStatus.sent
    assert len(memory.outbox) == 5


class _RejectAll(MailBackend):
    """Refuses everyone, slowly, and says when the first message is being sent."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        self.started = started

    @classmethod
    def from_url(cls, url: str) -> _RejectAll:  # pragma: no cover - built directly
        raise NotImplementedError

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.started.set()
        time.sleep(0.2)  # the cancel lands while this batch is in flight
        return [SendResult(SendStatus.rejected, 550, "no such user") for _ in messages]


@pytest.mark.one_database("it makes its own PostgreSQL database")
def test_a_cancel_is_never_overwritten_by_an_error_budget_pause(
    postgres_url: str, settings: Settings
) -> None:
    """Two threads on PostgreSQL: a send whose error budget runs out, and an operator who
    cancels meanwhile. Before, the send's pause was an unconditional UPDATE written after the
    cancel: the edition ended paused, and `resume` then restarted a cancelled edition."""
    pg = settings.model_copy(
        update={"database_url": postgres_url, "error_budget": 3, "batch_size": 5}
    )
    engine = make_engine(postgres_url)
    upgrade(engine)
    from newsletter.audience.importing import import_comparisons

    try:
        with Session(engine, expire_on_commit=False) as session:
            newsletter = publish.default_newsletter(session, pg)
            import_comparisons(session, path=EXAMPLES)
            people = [
                Subscriber(email=f"r{i}@example.com", email_key=f"r{i}@example.com")
                for i in range(10)
            ]
            session.add_all(people)
            session.flush()
            session.add_all(
                Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0)
                for p in people
            )
            session.commit()
            at = datetime(2026, 11, 25, tzinfo=UTC)
            outcome = publish.draft_edition(session, settings=pg, newsletter_slug=None, at=at)
            edition_id = outcome.edition.id or 0
        started = threading.Event()
        errors: list[BaseException] = []

        def send() -> None:
            with Session(engine, expire_on_commit=False) as own:
                try:
                    publish.send_edition(
                        own, edition_id=edition_id, settings=pg, backend=_RejectAll(started)
                    )
                except BaseException as exc:  # pragma: no cover - shown below
                    errors.append(exc)
                finally:
                    started.set()  # never leave the main thread waiting

        sender = threading.Thread(target=send)
        sender.start()
        # No timed waits here: under faketime (.ci/clock-moved) they misbehave.
        started.wait()
        assert not errors, errors
        with Session(engine, expire_on_commit=False) as operator:
            publish.cancel_edition(operator, edition_id=edition_id)
        sender.join()
        assert not errors, errors
        with Session(engine, expire_on_commit=False) as session:
            assert store.edition_status(session, edition_id=edition_id) == "cancelled"
            try:
                publish.resume_edition(session, edition_id=edition_id)
            except publish.EditionStateError as exc:
                assert "cancelled; can't resume it" in str(exc)
            else:  # pragma: no cover - the bug
                raise AssertionError("a cancelled edition was resumed")
    finally:
        engine.dispose()


def test_an_edition_that_ends_with_unknown_deliveries_says_so(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, engine: Any
) -> None:
    people = add_subscribers(3)
    lost = people[1].email
    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend.from_url(f"memory://?lose={lost}"),
    )
    assert report.totals["unknown"] == 1 and report.edition.status == EditionStatus.sent
    live = publish.live_edition(seeded, edition_id=draft, now=datetime.now(UTC))
    assert live.state == "sent, 1 unknown"
    advice = publish.unknown_advice(draft, 1)
    assert f"retry-failed {draft} --include-unknown" in advice and "edition status" in advice
    from tests.test_console import _user, sign_in

    _user(seeded, "ops@example.com", "operator")
    client = TestClient(
        create_app(settings, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    )
    sign_in(client, "ops@example.com")
    page = client.get(f"/console/editions/{draft}").text
    assert "<strong>sent, 1 unknown</strong>" in page and "Re-send unknown (1)" in page
    assert f"retry-failed {draft} --include-unknown" in page
    # Nothing else is claimed or open: the rest of the send is recorded normally.
    rows = seeded.exec(select(Delivery.status)).all()
    assert Counter(rows) == {"sent": 2, "unknown": 1}


class _SteppingClock:
    """A clock a test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_a_sender_that_stalled_past_its_lease_sends_nothing_another_took_over(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    """Sender A stalls (a rate limit) past its lease; B claims A's whole batch meanwhile. A must
    hand over none of it: not the chunk it is about to send, not the later ones (a review found
    the later chunks still went out, to people B was also mailing)."""
    from newsletter.publish.drafting import prepare, signer_for
    from newsletter.sending.dispatch import Policy, dispatch

    add_subscribers(100)
    t0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
    clock = _SteppingClock(t0)
    publish.start_edition(seeded, edition_id=draft, settings=settings, now=t0)
    edition = store.get_edition(seeded, edition_id=draft)
    _, template, _ = prepare(seeded, edition=edition, settings=settings)
    taken: list[int] = []

    class StallingLimiter:
        def chunk_size(self, batch: int) -> int:
            return 50

        def acquire(self, n: int) -> None:
            if not taken:  # the first wait outlives the lease, and B moves in
                clock.at = t0 + timedelta(seconds=350)
                b = ledger.claim_batch(
                    seeded,
                    edition_id=draft,
                    newsletter_id=edition.newsletter_id,
                    after_id=0,
                    limit=500,
                    owner="sender-b",
                    lease_seconds=300,
                    now=clock.at,
                )
                taken.append(len(b))
                clock.at = t0 + timedelta(seconds=400)
            else:
                clock.at += timedelta(seconds=1)

    summary = dispatch(
        seeded,
        edition_id=draft,
        newsletter_id=edition.newsletter_id,
        template=template,
        signer=signer_for(settings),
        backend=MemoryBackend(),
        policy=Policy(batch_size=500, lease_seconds=300),
        limiter=StallingLimiter(),
        clock=clock,
    )
    assert taken == [100]
    assert memory.outbox == []  # B's to send, not A's
    assert summary.taken_over == 100 and summary.unrecorded == 0


def test_a_retry_racing_the_last_sender_never_leaves_a_sent_edition_with_open_deliveries(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """retry-failed read `sending`, the last sender then finished the edition, and the re-queue
    committed: `sent` with pending deliveries that no worker would ever send (found in review)."""
    from newsletter.publish import sending

    add_subscribers(3)
    t0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
    publish.start_edition(seeded, edition_id=draft, settings=settings, now=t0)
    seeded.execute(update(Delivery).values(status="failed"))
    seeded.commit()
    real = ledger.retry_failed

    def finished_in_between(session: Session, **kwargs: Any) -> int:
        sending._finish_if_done(session, edition_id=draft, now=t0)
        return real(session, **kwargs)

    monkeypatch.setattr(ledger, "retry_failed", finished_in_between)
    assert publish.retry_failed(seeded, edition_id=draft) == 3
    assert store.edition_status(seeded, edition_id=draft) == EditionStatus.sending
    monkeypatch.undo()
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert report.totals["sent"] == 3 and report.edition.status == EditionStatus.sent


def test_the_edition_is_not_finished_while_a_delivery_is_open(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(2)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    assert not store.transition(seeded, edition_id=draft, action="finish")
    seeded.rollback()
    assert store.edition_status(seeded, edition_id=draft) == EditionStatus.sending


def test_a_delivery_whose_subscriber_is_gone_is_skipped_and_the_edition_finishes(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    """Deliveries name their subscriber without a database foreign key (migration 0022: the
    key's per-row check was most of a million-row start). Should a subscriber row vanish
    anyway, the send skips that delivery and finishes; it is never left claimed."""
    add_subscribers(3)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    gone = seeded.exec(
        select(Delivery.subscriber_id)
        .where(Delivery.edition_id == draft)
        .order_by(col(Delivery.id))
    ).first()
    assert gone is not None
    seeded.execute(delete(Subscription).where(col(Subscription.subscriber_id) == gone))
    seeded.execute(delete(Subscriber).where(col(Subscriber.id) == gone))
    seeded.commit()

    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend
    )
    assert len(memory.outbox) == 2
    assert report.totals.get("skipped") == 1 and report.totals["sent"] == 2
    assert report.edition.status == EditionStatus.sent
    left = seeded.exec(
        select(Delivery.status).where(Delivery.edition_id == draft, Delivery.subscriber_id == gone)
    ).one()
    assert left == DeliveryStatus.skipped.value
