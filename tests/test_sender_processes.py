"""Sender processes: a send spread over forked processes, over real SMTP, on SQLite and
PostgreSQL. Everyone is mailed once, progress reaches the parent, and a process that dies
mid-send loses nobody and mails nobody twice."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import Session

from newsletter import publish
from newsletter.audience.importing import import_comparisons
from newsletter.backends import MailBackend, backend_from_url
from newsletter.backends.base import SendResult
from newsletter.backends.memory import MemoryBackend
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.publish import senders
from newsletter.publish.senders import SenderProcessDied
from newsletter.sending import ledger
from newsletter.sending.dispatch import SendSummary
from newsletter.sending.progress import SendProgress
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import DeliveryStatus, Subscriber, Subscription

from .conftest import EXAMPLES, free_port


@dataclass
class CountingSink:
    """An aiosmtpd server that counts messages per connection and per recipient."""

    port: int
    per_connection: Counter[tuple[str, int]] = field(default_factory=Counter)
    recipients: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.per_connection[session.peer] += 1
            self.recipients.update(a.lower() for a in envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[CountingSink]:
    counting = CountingSink(free_port())
    controller = Controller(counting, hostname="127.0.0.1", port=counting.port)
    controller.start()
    try:
        yield counting
    finally:
        controller.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, Session]]:
    """The example comparisons, 240 subscribers and the week's draft, on either database."""
    url = (
        f"sqlite:///{tmp_path / 'send.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    settings = settings.model_copy(update={"database_url": url, "batch_size": 20})
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine, expire_on_commit=False) as session:
        newsletter = publish.default_newsletter(session, settings)
        import_comparisons(session, path=EXAMPLES)
        people = [
            Subscriber(email=f"reader{i}@example.com", email_key=f"reader{i}@example.com")
            for i in range(240)
        ]
        session.add_all(people)
        session.flush()
        session.add_all(
            Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0) for p in people
        )
        session.commit()
        yield settings, session
    engine.dispose()


START = datetime(2026, 11, 30, 9, tzinfo=UTC)


def _draft(session: Session, settings: Settings) -> int:
    outcome = publish.draft_edition(
        session, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, 12, tzinfo=UTC)
    )
    return outcome.edition.id or 0


def test_senders_spread_over_processes_mail_everyone_once(
    store: tuple[Settings, Session], sink: CountingSink
) -> None:
    settings, session = store
    edition_id = _draft(session, settings)
    progress = SendProgress()
    batches: list[int] = []
    parent = os.getpid()
    pids: set[int] = set()
    lock = threading.Lock()

    def make_backend() -> MailBackend:
        with lock:
            pids.add(os.getpid())
        return backend_from_url(sink.url)

    report = publish.send_edition(
        session,
        edition_id=edition_id,
        settings=settings,
        backend=make_backend,
        options=publish.SendOptions(
            concurrency=4, processes=2, progress=progress, on_batch=batches.append
        ),
    )
    assert report.edition.status == "sent" and report.run.sent == 240
    assert sink.recipients == Counter({f"reader{i}@example.com": 1 for i in range(240)})
    assert len(sink.per_connection) == 4
    # The backends were made in the sender processes, not here: the work left this process.
    assert parent not in pids
    # Progress and batches crossed the process boundary.
    assert progress.snapshot().done == 240 and sum(batches) == 240
    assert ledger.counts(session, edition_id=edition_id)["sent"] == 240


class DyingBackend(MailBackend):
    """Sends through ``inner``; the first process to reach ``after`` answers ends itself
    abruptly (``os._exit``: no cleanup, as a kill -9 or an out-of-memory kill would)."""

    def __init__(self, inner: MailBackend, flag: Path, after: int) -> None:
        super().__init__()
        self.inner, self.flag, self.after, self.answered = inner, flag, after, 0

    @classmethod
    def from_url(cls, url: str) -> DyingBackend:
        raise NotImplementedError

    def open(self) -> bool:
        return self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def send_messages(self, messages: Any) -> list[SendResult]:
        raise NotImplementedError

    def send_each(
        self,
        messages: Any,
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        def counted(index: int, result: SendResult) -> None:
            on_result(index, result)
            self.answered += 1
            if self.answered == self.after:
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return  # another process died already: this one lives
                os._exit(9)

        return self.inner.send_each(messages, counted, on_handover)


def test_a_sender_process_that_dies_loses_nobody_and_mails_nobody_twice(
    store: tuple[Settings, Session], sink: CountingSink, tmp_path: Path
) -> None:
    """One of two processes dies after 30 answers (written to its journal, not yet to the
    ledger). The send says so in one line; the next run reads the dead process's journal,
    takes its claims back and finishes: everyone exactly once."""
    settings, session = store
    edition_id = _draft(session, settings)
    flag = tmp_path / "died"

    def make_backend() -> MailBackend:
        return DyingBackend(backend_from_url(sink.url), flag, after=30)

    with pytest.raises(SenderProcessDied, match="ended without reporting.*never twice"):
        publish.send_edition(
            session,
            edition_id=edition_id,
            settings=settings,
            backend=make_backend,
            options=publish.SendOptions(concurrency=2, processes=2, clock=fixed_clock(START)),
        )
    assert flag.exists()
    report = publish.send_edition(
        session,
        edition_id=edition_id,
        settings=settings,
        backend=lambda: backend_from_url(sink.url),
        options=publish.SendOptions(
            concurrency=2, processes=2, clock=fixed_clock(START + timedelta(hours=1))
        ),
    )
    assert report.edition.status == "sent"
    assert sink.recipients == Counter({f"reader{i}@example.com": 1 for i in range(240)})
    assert ledger.counts(session, edition_id=edition_id)["sent"] == 240


def test_the_layout_is_one_process_per_core_and_one_for_the_memory_outbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    smtp = backend_from_url("smtp://127.0.0.1:25")
    assert senders.layout(None, 0, smtp) == (16, 4)  # default: four senders per core
    assert senders.layout(None, 2, smtp) == (2, 2)  # NEWSLETTER_SENDERS
    assert senders.layout(8, 2, smtp) == (8, 4)  # --concurrency wins; still one per core
    assert senders.layout(8, 0, smtp, 1) == (8, 1)  # --processes 1: threads only
    assert senders.layout(1, 0, smtp) == (1, 1)
    # The memory outbox lives in this process: its senders stay here.
    assert senders.layout(None, 0, MemoryBackend()) == (16, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert senders.layout(None, 0, smtp) == (8, 2)  # four per core, one process per core
    # A big machine opens at most 16 connections unless told otherwise.
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert senders.layout(None, 0, smtp) == (16, 16)
    assert senders.layout(None, 24, smtp) == (24, 24)


def test_a_memory_backend_send_keeps_its_outbox_here(
    store: tuple[Settings, Session],
) -> None:
    settings, session = store
    edition_id = _draft(session, settings)
    from newsletter.backends.memory import outbox

    count, processes = senders.layout(None, 0, MemoryBackend())
    report = publish.send_edition(
        session,
        edition_id=edition_id,
        settings=settings,
        backend=MemoryBackend,
        options=publish.SendOptions(concurrency=count, processes=processes),
    )
    assert report.run.sent == 240
    assert Counter(m.recipient for m in outbox) == Counter(
        {f"reader{i}@example.com": 1 for i in range(240)}
    )


_ = OutgoingMessage  # the type the backends send


def test_answers_are_recorded_in_statements_of_bounded_size(
    store: tuple[Settings, Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch records all its answers at once (10,000 skipped ones, say); each UPDATE
    carries at most RECORD_ROWS of them (PostgreSQL takes 65,535 parameters, 8 a row)."""
    settings, session = store
    edition_id = _draft(session, settings)
    publish.start_edition(session, edition_id=edition_id, settings=settings, now=START)
    monkeypatch.setattr(ledger, "RECORD_ROWS", 100)
    batch = ledger.claim_batch(
        session,
        edition_id=edition_id,
        newsletter_id=1,
        after_id=0,
        limit=240,
        owner="me",
        lease_seconds=60,
        now=START,
    )
    outcomes = [ledger.Outcome(d.id, DeliveryStatus.skipped) for d in batch]
    assert ledger.record(session, outcomes=outcomes, owner="me", now=START) == 240
    session.commit()
    assert ledger.counts(session, edition_id=edition_id)["skipped"] == 240


def test_an_error_that_cannot_cross_to_the_parent_keeps_its_kind_and_text() -> None:
    """Some errors pickle but cannot be rebuilt (an HTTP backend's, with keyword-only
    arguments): the parent then gets a BackendError with the same text and hint, not a
    TypeError from unpickling it."""
    from newsletter.backends.base import BackendError
    from newsletter.backends.http import HTTPBackendError
    from newsletter.publish.senders import _portable

    refused = HTTPBackendError("401: the API key was refused", payload={}, response=None)
    refused.hint = "edition 3 is paused: fix this, then `newsletter edition resume 3`"
    carried = _portable(refused)
    assert type(carried) is BackendError
    assert str(carried) == str(refused)
    plain = ValueError("plain")
    assert _portable(plain) is plain


def _policy_sender(
    session: Session, backend: MailBackend, progress: SendProgress | None, on_batch: Any
) -> SendSummary:
    """A sender that only reports the scheduling policy of the thread it runs in."""
    return SendSummary(errors=[str(os.sched_getscheduler(0))])


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_senders_run_as_batch_work_and_keep_a_policy_the_operator_chose(tmp_path: Path) -> None:
    """Every sender thread, in this process or a forked one, runs under SCHED_BATCH (it waits
    its turn instead of preempting the relay or another sender); the thread that started the
    send keeps its policy; and senders started under SCHED_IDLE (an operator's choice) keep
    that."""
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        pytest.skip("the test runner itself runs under another scheduling policy")
    engine = make_engine(f"sqlite:///{tmp_path / 'policy.db'}")
    threaded = senders.in_threads(engine, _policy_sender, MemoryBackend, 3, None, None)
    forked = senders.in_processes(engine, _policy_sender, MemoryBackend, 4, 2, None, None)
    assert threaded.errors == [str(os.SCHED_BATCH)] * 3
    assert forked.errors == [str(os.SCHED_BATCH)] * 4
    assert os.sched_getscheduler(0) == os.SCHED_OTHER

    chosen: list[str] = []

    def idle_operator() -> None:  # threads inherit the policy of the thread that starts them
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except PermissionError:
            chosen.append("refused")
            return
        summary = senders.in_threads(engine, _policy_sender, MemoryBackend, 2, None, None)
        chosen.extend(summary.errors)

    operator = threading.Thread(target=idle_operator)
    operator.start()
    operator.join()
    engine.dispose()
    if chosen == ["refused"]:
        pytest.skip("this sandbox refuses SCHED_IDLE: the operator's choice can't be set here")
    assert chosen == [str(os.SCHED_IDLE)] * 2
