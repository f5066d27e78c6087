"""Sending: once per subscriber, never to the unsubscribed, resumable, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.audience import importing
from newsletter.backends.base import SendResult
from newsletter.backends.memory import MemoryBackend, outbox
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Delivery, Edition, Subscriber
from tests.conftest import IMPORTED_AT

from .conftest import EXAMPLES


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


def _recipients() -> Counter[str]:
    return Counter(m.recipient for m in outbox)


def test_send_moves_draft_to_sent_and_mails_everyone_once(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(30)
    assert store.get_edition(seeded, edition_id=draft).status == "draft"
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert report.run.sent == 30 and report.audience_added == 30
    assert report.totals["sent"] == 30
    assert store.get_edition(seeded, edition_id=draft).status == "sent"
    assert set(_recipients().values()) == {1} and len(_recipients()) == 30
    rows = seeded.exec(select(Delivery).where(Delivery.edition_id == draft)).all()
    assert all(r.status == "sent" and r.message_id and r.attempts == 1 for r in rows)


def test_second_send_sends_nothing(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(12)
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=MemoryBackend())
    again = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert again.run.attempted == 0 and len(outbox) == 12


def test_unsubscribed_and_suppressed_get_nothing(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(5)
    newsletter = publish.default_newsletter(seeded, settings)
    store.set_subscription_status(
        seeded,
        subscriber_id=people[0].id or 0,
        newsletter_id=newsletter.id or 0,
        status="unsubscribed",
        source="page",
    )
    people[1].suppressed = "complained"
    seeded.add(people[1])
    seeded.commit()
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=MemoryBackend())
    assert people[0].email not in _recipients() and people[1].email not in _recipients()
    assert len(outbox) == 3


def test_unsubscribe_between_batches_takes_effect(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(10)
    newsletter = publish.default_newsletter(seeded, settings)
    last = people[-1]

    class UnsubscribeAfterFirstBatch(MemoryBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            results = super().send_messages(messages)
            if len(outbox) == 4:  # the subscriber leaves while the send is running
                store.set_subscription_status(
                    seeded,
                    subscriber_id=last.id or 0,
                    newsletter_id=newsletter.id or 0,
                    status="unsubscribed",
                    source="one-click",
                    edition_id=draft,
                )
            return results

    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"batch_size": 4}),
        backend=UnsubscribeAfterFirstBatch(),
    )
    assert last.email not in _recipients()
    assert report.run.sent == 9 and report.run.skipped == 1
    assert report.totals["skipped"] == 1


def test_people_who_join_mid_send_wait_for_the_next_edition(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(4)

    class JoinDuringSend(MemoryBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            if not outbox:
                add_subscribers(2, prefix="late")
            return super().send_messages(messages)

    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"batch_size": 2}),
        backend=JoinDuringSend(),
    )
    assert len(outbox) == 4 and not any(r.startswith("late") for r in _recipients())


class _CrashOnThirdBatch(MemoryBackend):
    batches = 0

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        type(self).batches += 1
        if type(self).batches == 3:
            raise ConnectionError("process killed")
        return super().send_messages(messages)


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_crash_mid_send_resumes_without_duplicates_or_losses(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, journal: bool
) -> None:
    add_subscribers(20)
    small = settings.model_copy(
        update={"batch_size": 5, "journal_dir": settings.journal_dir if journal else "off"}
    )
    _CrashOnThirdBatch.batches = 0
    with pytest.raises(ConnectionError):
        publish.send_edition(seeded, edition_id=draft, settings=small, backend=_CrashOnThirdBatch())
    seeded.rollback()
    assert len(outbox) == 10
    assert store.get_edition(seeded, edition_id=draft).status == "sending"
    report = publish.send_edition(seeded, edition_id=draft, settings=small, backend=MemoryBackend())
    assert report.audience_added == 0
    if journal:
        # Its journal is unlocked, so that sender is known dead: its batch (nothing of it
        # handed over) is taken over at once, not after the lease.
        assert report.run.sent == 10 and report.edition.status == "sent"
    else:
        # Nothing says it is dead: its batch is left alone until the lease runs out (that
        # send might still be alive); everything else goes out.
        assert report.run.sent == 5
        assert report.totals["claimed"] == 5 and report.edition.status == "sending"
        # The lease expires (as if five minutes passed): the next run takes the batch over.
        seeded.execute(
            update(Delivery)
            .where(col(Delivery.status) == "claimed")
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        seeded.commit()
        report = publish.send_edition(
            seeded, edition_id=draft, settings=small, backend=MemoryBackend()
        )
        assert report.run.sent == 5
    assert len(_recipients()) == 20 and set(_recipients().values()) == {1}
    assert store.get_edition(seeded, edition_id=draft).status == "sent"


def _send_concurrently(engine: Engine, settings: Settings, edition_id: int, runs: int) -> None:
    """``runs`` sends of one edition at once, each with its own session, as two cron jobs."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(runs)

    def one() -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                barrier.wait()
                publish.send_edition(
                    session, edition_id=edition_id, settings=settings, backend=MemoryBackend()
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_sends_at_once_mail_everyone_exactly_once(
    seeded: Session, engine: Engine, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(60)
    _send_concurrently(engine, settings.model_copy(update={"batch_size": 5}), draft, runs=3)
    assert len(_recipients()) == 60 and set(_recipients().values()) == {1}
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).status == "sent"


def test_deferred_are_retried_by_the_next_run(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(3)
    slow = people[1].email
    settings = settings.model_copy(update={"retry_base_seconds": 0})  # retry at once
    first = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend.from_url(f"memory://?defer={slow}&reject={people[2].email}"),
    )
    assert (first.run.sent, first.run.deferred, first.run.failed) == (1, 1, 1)
    assert store.get_edition(seeded, edition_id=draft).status == "sending"
    failed = seeded.exec(
        select(Delivery).where(Delivery.edition_id == draft, Delivery.status == "failed")
    ).one()
    assert failed.error_code == 550 and "user unknown" in (failed.error_text or "")
    second = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert second.run.sent == 1 and _recipients()[slow] == 1
    assert store.get_edition(seeded, edition_id=draft).status == "sent"
    assert ledger.counts(seeded, edition_id=draft)["failed"] == 1


def test_one_delivery_per_edition_and_subscriber_is_enforced(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    person = add_subscribers(1)[0]
    seeded.add(Delivery(edition_id=draft, subscriber_id=person.id or 0))
    seeded.commit()
    seeded.add(Delivery(edition_id=draft, subscriber_id=person.id or 0))
    with pytest.raises(IntegrityError):
        seeded.commit()


def test_send_refuses_default_key(seeded: Session, settings: Settings, draft: int) -> None:
    from newsletter.config import ConfigError

    with pytest.raises(ConfigError):
        publish.send_edition(
            seeded,
            edition_id=draft,
            settings=settings.model_copy(update={"secret_key": ""}),
            backend=MemoryBackend(),
        )
    assert store.get_edition(seeded, edition_id=draft).status == "draft"


@pytest.mark.one_database("it makes its own PostgreSQL database")
def test_whole_path_on_postgresql(postgres_url: str, settings: Settings, tmp_path: Any) -> None:
    pg_settings = settings.model_copy(update={"database_url": postgres_url, "batch_size": 7})
    engine = make_engine(postgres_url)
    upgrade(engine)
    csv = tmp_path / "s.csv"
    csv.write_text("email,name\n" + "".join(f"p{i}@example.com,P {i}\n" for i in range(25)))
    try:
        with Session(engine, expire_on_commit=False) as session:
            publish.default_newsletter(session, pg_settings)
            importing.import_comparisons(session, path=EXAMPLES)
            importing.import_subscribers(
                session, now=IMPORTED_AT, path=csv, default_newsletter=pg_settings.newsletter
            )
            session.commit()
            draft = publish.draft_edition(
                session,
                settings=pg_settings,
                newsletter_slug=None,
                at=datetime(2026, 11, 25, tzinfo=UTC),
            )
            edition_id = draft.edition.id or 0
            publish.send_edition(
                session, edition_id=edition_id, settings=pg_settings, backend=MemoryBackend()
            )
            publish.send_edition(
                session, edition_id=edition_id, settings=pg_settings, backend=MemoryBackend()
            )
            assert len(outbox) == 25 and set(_recipients().values()) == {1}
            assert session.get_one(Edition, edition_id).status == "sent"
            assert len(session.exec(select(Subscriber)).all()) == 25
    finally:
        engine.dispose()


def test_unknown_outcome_is_never_retried_automatically(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(3)
    lost = people[0].email
    first = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend.from_url(f"memory://?lose={lost}"),
    )
    assert first.run.unknown == 1 and first.totals["unknown"] == 1
    again = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert again.run.attempted == 0 and _recipients()[lost] == 1
    assert store.get_edition(seeded, edition_id=draft).status == "sent"


def test_a_bad_recipient_fails_alone_and_does_not_stall_the_edition(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(4)
    people[1].email = "broken address@example.com"  # written behind the importer's back
    seeded.add(people[1])
    seeded.commit()
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert report.run.sent == 3 and report.run.failed == 1
    assert "unsafe address" in report.run.errors[0]
    assert store.get_edition(seeded, edition_id=draft).status == "sent"


def test_international_domain_is_stored_and_mailed_in_ascii_form(
    seeded: Session, settings: Settings, draft: int, tmp_path: Any
) -> None:
    csv = tmp_path / "idn.csv"
    csv.write_text("email,name\nana@bücher.de,Ana\nz@example.com,Z\n", encoding="utf-8")
    importing.import_subscribers(
        seeded, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
    )
    seeded.commit()
    assert "ana@xn--bcher-kva.de" in seeded.exec(select(Subscriber.email)).all()
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert report.run.sent == 2 and "ana@xn--bcher-kva.de" in _recipients()


# --- operating a send: backoff, error budget, pause/resume/cancel, retry-failed, concurrency --


def test_deferred_wait_for_their_backoff_then_give_up_after_max_attempts(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(2)
    slow = people[0].email
    flaky = MemoryBackend.from_url(f"memory://?defer={slow}")
    strict = settings.model_copy(update={"max_attempts": 3, "retry_base_seconds": 60})
    publish.send_edition(seeded, edition_id=draft, settings=strict, backend=flaky)
    row = seeded.exec(select(Delivery).where(Delivery.status == "deferred")).one()
    assert row.retry_at is not None
    wait = (row.retry_at - datetime.now(UTC)).total_seconds()
    assert 25 < wait <= 60  # jittered in [base/2, base]
    again = publish.send_edition(seeded, edition_id=draft, settings=strict, backend=flaky)
    assert again.run.attempted == 0 and again.next_retry_at == row.retry_at  # not due yet
    for _ in range(2):  # time passes: each retry becomes due
        seeded.execute(update(Delivery).values(retry_at=datetime.now(UTC) - timedelta(seconds=1)))
        seeded.commit()
        last = publish.send_edition(seeded, edition_id=draft, settings=strict, backend=flaky)
    assert last.run.failed == 1 and "gave up after 3 attempts" in last.run.errors[0]
    seeded.refresh(row)
    assert row.status == "failed" and row.attempts == 3 and row.error_code == 451
    assert store.get_edition(seeded, edition_id=draft).status == "sent"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    import random

    from newsletter.sending.dispatch import Policy

    policy = Policy(retry_base_seconds=60, retry_max_seconds=600)
    now = datetime(2026, 11, 25, tzinfo=UTC)
    rng = random.Random(7)
    delays = [
        [(policy.retry_at(n, now, rng) - now).total_seconds() for _ in range(50)]
        for n in (1, 2, 3, 6)
    ]
    for d, full in zip(delays, (60, 120, 240, 600), strict=True):
        assert min(d) >= full / 2 and max(d) <= full and len(set(d)) > 40


def test_error_budget_pauses_the_edition_and_says_why(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(30)
    rejecting = MemoryBackend.from_url("memory://?reject=" + ",".join(p.email for p in people[:12]))
    budget = settings.model_copy(update={"error_budget": 10, "batch_size": 5})
    report = publish.send_edition(seeded, edition_id=draft, settings=budget, backend=rejecting)
    assert report.edition.status == "paused"
    assert "error budget: 10 failures in a row" in (report.edition.status_reason or "")
    assert report.run.stopped_because and len(outbox) == 0
    with pytest.raises(publish.EditionStateError, match="resume"):
        publish.send_edition(seeded, edition_id=draft, settings=budget, backend=MemoryBackend())
    publish.resume_edition(seeded, edition_id=draft)
    done = publish.send_edition(seeded, edition_id=draft, settings=budget, backend=MemoryBackend())
    # The two rejected addresses not reached before the pause now go through the new backend.
    assert done.edition.status == "sent" and len(outbox) == 20
    assert done.totals["failed"] == 10


def test_pause_takes_effect_before_the_next_batch_and_resume_never_resends(
    seeded: Session, engine: Engine, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(20)

    class OperatorPausesDuringSend(MemoryBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            results = super().send_messages(messages)
            if len(outbox) == 5:
                with Session(engine) as operator:  # another process, in effect
                    publish.pause_edition(operator, edition_id=draft)
            return results

    small = settings.model_copy(update={"batch_size": 5})
    report = publish.send_edition(
        seeded, edition_id=draft, settings=small, backend=OperatorPausesDuringSend()
    )
    assert len(outbox) == 5 and report.edition.status == "paused"
    assert report.run.stopped_because == "paused"
    publish.resume_edition(seeded, edition_id=draft)
    publish.send_edition(seeded, edition_id=draft, settings=small, backend=MemoryBackend())
    assert len(_recipients()) == 20 and set(_recipients().values()) == {1}


def test_cancel_stops_for_good(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(3)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    publish.cancel_edition(seeded, edition_id=draft)
    with pytest.raises(publish.EditionStateError, match="cancelled"):
        publish.send_edition(seeded, edition_id=draft, settings=settings, backend=MemoryBackend())
    with pytest.raises(publish.EditionStateError, match="can't resume it"):
        publish.resume_edition(seeded, edition_id=draft)
    assert len(outbox) == 0


def test_retry_failed_requeues_only_what_the_operator_chose(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(4)
    backend = MemoryBackend.from_url(
        f"memory://?reject={people[0].email},{people[1].email}&lose={people[2].email}"
    )
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend)
    assert store.get_edition(seeded, edition_id=draft).status == "sent"
    assert publish.retry_failed(seeded, edition_id=draft, code=451) == 0
    assert publish.retry_failed(seeded, edition_id=draft) == 2  # not the unknown one
    assert store.edition_status(seeded, edition_id=draft) == "sending"
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    # Both were refused "5.1.1 user unknown": hard bounces, so their addresses are suppressed
    # and the re-queued deliveries are skipped, not mailed again.
    assert (report.run.sent, report.run.skipped) == (0, 2) and report.edition.status == "sent"
    assert people[0].email not in _recipients() and people[1].email not in _recipients()
    assert _recipients()[people[2].email] == 1  # the unknown one was not sent twice


def test_concurrent_senders_in_one_process_share_the_work(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(200)
    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"batch_size": 10}),
        backend=MemoryBackend,
        options=publish.SendOptions(concurrency=4),
    )
    assert report.run.sent == 200 and report.edition.status == "sent"
    assert len(_recipients()) == 200 and set(_recipients().values()) == {1}


def test_concurrent_senders_each_keep_a_connection_busy(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    """Four senders over real SMTP on one database: every one of the four connections
    carries a share of the send, and everyone is mailed once. Before the claim was one
    statement, two senders could pick the same ids; the loser's claim came back empty, it took
    that for the end and stopped, so ``--concurrency 4`` ran one connection most of the time."""
    from aiosmtpd.controller import Controller

    from newsletter.backends import backend_from_url

    from .conftest import free_port

    per_connection: Counter[tuple[str, int]] = Counter()
    recipients: Counter[str] = Counter()
    in_data = {"now": 0, "most": 0}
    lock = threading.Lock()

    class SlowSink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                in_data["now"] += 1
                in_data["most"] = max(in_data["most"], in_data["now"])
            await asyncio.sleep(0.003)  # a real server takes a moment: senders overlap
            with lock:
                in_data["now"] -= 1
                per_connection[session.peer] += 1
                recipients.update(a.lower() for a in envelope.rcpt_tos)
            return "250 OK"

    port = free_port()
    controller = Controller(SlowSink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        people = add_subscribers(400)
        report = publish.send_edition(
            seeded,
            edition_id=draft,
            settings=settings.model_copy(update={"batch_size": 10}),
            backend=lambda: backend_from_url(f"smtp://127.0.0.1:{port}"),
            options=publish.SendOptions(concurrency=4),
        )
    finally:
        controller.stop()
    assert report.run.sent == 400 and report.edition.status == "sent"
    assert recipients == Counter({p.email.lower(): 1 for p in people})
    assert len(per_connection) == 4, per_connection
    # Each connection carried a real share, not one message before its sender gave up.
    assert min(per_connection.values()) >= 40, per_connection
    assert in_data["most"] >= 3


def test_wait_keeps_going_until_deferred_retries_are_done(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    people = add_subscribers(3)
    calls = {"n": 0}

    class FlakyOnce(MemoryBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            calls["n"] += 1
            self.defer = frozenset({people[0].email}) if calls["n"] == 1 else frozenset()
            return super().send_messages(messages)

    naps: list[float] = []
    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"retry_base_seconds": 0.1}),
        backend=FlakyOnce(),
        options=publish.SendOptions(wait=True, sleep=naps.append),
    )
    assert report.edition.status == "sent" and len(outbox) == 3 and naps


def test_credentials_refused_mid_batch_records_what_was_accepted_and_pauses(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, api_stub: Any
) -> None:
    """An email API that stops accepting mid-batch (e.g. an account out of credits): the
    messages it accepted are recorded, the rest go back to the queue, the edition pauses."""
    from pathlib import Path

    from newsletter.backends import BackendError
    from newsletter.backends.postmark import PostmarkBackend

    fixtures = Path(__file__).parent / "fixtures" / "http" / "postmark"
    ok = (fixtures / "send-ok.json").read_text()
    add_subscribers(6)
    for _ in range(3):
        api_stub.reply(200, ok)
    api_stub.reply(401, (fixtures / "error-10-bad-token.json").read_text())
    backend = PostmarkBackend.from_url(f"postmark://token@?endpoint={api_stub.url}")
    with pytest.raises(BackendError):
        publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend)
    seeded.rollback()
    counts = ledger.counts(seeded, edition_id=draft)
    assert (counts["queued"], counts["pending"], counts["claimed"]) == (3, 3, 0)
    edition = store.get_edition(seeded, edition_id=draft)
    seeded.refresh(edition)
    assert edition.status == "paused" and "401" in (edition.status_reason or "")
    assert "token@" not in (edition.status_reason or "")
    publish.resume_edition(seeded, edition_id=draft)
    api_stub.replies.clear()
    api_stub.reply(200, ok)
    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=PostmarkBackend.from_url(f"postmark://token@?endpoint={api_stub.url}"),
    )
    assert report.run.sent == 3 and report.edition.status == "sent"
    assert len(api_stub.calls) == 4 + 3  # nobody accepted was posted again


def test_a_crash_mid_batch_leaves_only_the_chunk_in_flight_unrecorded(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    from newsletter.sending.dispatch import SEND_CHUNK

    add_subscribers(3 * SEND_CHUNK)
    calls = {"n": 0}

    class DiesOnThirdChunk(MemoryBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            calls["n"] += 1
            if calls["n"] == 3:
                super().send_messages(messages)  # handed over...
                raise KeyboardInterrupt  # ...and the process dies before recording
            return super().send_messages(messages)

    big = settings.model_copy(update={"batch_size": 3 * SEND_CHUNK})
    with pytest.raises(KeyboardInterrupt):
        publish.send_edition(seeded, edition_id=draft, settings=big, backend=DiesOnThirdChunk())
    seeded.rollback()
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts["sent"] == 2 * SEND_CHUNK and counts["claimed"] == SEND_CHUNK
