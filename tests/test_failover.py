"""Failover: a backend that keeps failing transiently hands its deferred messages to the next."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import backend_from_url
from newsletter.backends.failover import FailoverBackend
from newsletter.backends.memory import MemoryBackend, outbox
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import Settings
from newsletter.edition.personalization import Recipient
from newsletter.storage import store
from tests.conftest import PINNED_DATE

from .conftest import SMTPSink, free_port


def _messages(seeded: Session, settings: Settings, draft: int, n: int) -> list[Any]:
    edition = store.get_edition(seeded, edition_id=draft)
    template = publish.prepare(seeded, edition=edition, settings=settings)[1]
    signer = publish.signer_for(settings)
    return [
        template.build(Recipient(i, f"f{i}@example.com", None), signer, now=PINNED_DATE)
        for i in range(n)
    ]


def test_url_list_builds_a_failover_backend(smtp_server: Any) -> None:
    backend = backend_from_url(f"smtp://127.0.0.1:{free_port()}   {smtp_server.url}")
    assert isinstance(backend, FailoverBackend)
    assert [type(b) for b in backend.backends] == [SMTPBackend, SMTPBackend]


def test_dead_primary_fails_over_to_the_next(
    seeded: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    dead = SMTPBackend.from_url(f"smtp://127.0.0.1:{free_port()}")
    backend = FailoverBackend([dead, SMTPBackend.from_url(smtp_server.url)])
    with backend:
        results = backend.send_messages(_messages(seeded, settings, draft, 4))
    assert [r.status for r in results] == ["sent"] * 4
    assert len(smtp_server.received) == 4 and backend.current == 1


def test_primary_deferring_everyone_switches_and_accepted_ones_are_not_resent(
    seeded: Session, settings: Settings, draft: int
) -> None:
    messages = _messages(seeded, settings, draft, 6)
    flaky = MemoryBackend(defer=frozenset(m.recipient for m in messages[2:]))
    spare = MemoryBackend(retain=True)
    backend = FailoverBackend([flaky, spare], switch_after=3)
    results = backend.send_messages(messages)
    assert [r.status for r in results] == ["sent"] * 6
    recipients = [m.recipient for m in outbox]
    assert sorted(recipients) == sorted(m.recipient for m in messages)  # each exactly once
    assert backend.current == 1 and "[memory]" in backend.describe()


def test_a_few_deferrals_do_not_switch(seeded: Session, settings: Settings, draft: int) -> None:
    messages = _messages(seeded, settings, draft, 6)
    backend = FailoverBackend(
        [MemoryBackend(defer=frozenset({messages[1].recipient})), MemoryBackend()], switch_after=3
    )
    results = backend.send_messages(messages)
    assert [r.status.value for r in results].count("deferred") == 1 and backend.current == 0


def test_send_edition_through_failover(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, smtp_server: Any
) -> None:
    add_subscribers(8)
    url = f"smtp://127.0.0.1:{free_port()} {smtp_server.url}"
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=lambda: backend_from_url(url)
    )
    assert report.run.sent == 8 and len(smtp_server.received) == 8
    assert report.edition.status == "sent"


def test_three_backends_two_dead_nothing_sent_twice(
    seeded: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    messages = _messages(seeded, settings, draft, 5)
    half = MemoryBackend(defer=frozenset(m.recipient for m in messages[1:]))
    dead = SMTPBackend.from_url(f"smtp://127.0.0.1:{free_port()}")
    backend = FailoverBackend([half, dead, SMTPBackend.from_url(smtp_server.url)], switch_after=2)
    results = backend.send_messages(messages)
    assert [r.status for r in results] == ["sent"] * 5
    assert len(outbox) == 1 and len(smtp_server.received) == 4
    backend.close()


def test_backend_breaking_mid_batch_hands_only_the_unsent_to_the_next(
    seeded: Session, settings: Settings, draft: int, api_stub: Any
) -> None:
    from pathlib import Path

    from newsletter.backends.postmark import PostmarkBackend

    fixtures = Path(__file__).parent / "fixtures" / "http" / "postmark"
    api_stub.reply(200, (fixtures / "send-ok.json").read_text())
    api_stub.reply(200, (fixtures / "send-ok.json").read_text())
    api_stub.reply(401, (fixtures / "error-10-bad-token.json").read_text())
    messages = _messages(seeded, settings, draft, 5)
    spare = MemoryBackend()
    backend = FailoverBackend(
        [PostmarkBackend.from_url(f"postmark://t@?endpoint={api_stub.url}"), spare]
    )
    results = backend.send_messages(messages)
    assert [r.status for r in results] == ["queued", "queued", "sent", "sent", "sent"]
    assert [m.recipient for m in outbox] == [m.recipient for m in messages[2:]]


@pytest.fixture
def spare_smtp() -> Iterator[SMTPSink]:
    """A second real SMTP server, for the backend failover moves to."""
    with _smtp_server("250 OK") as sink:
        yield sink


@contextmanager
def _smtp_server(data_reply: str) -> Iterator[SMTPSink]:
    from aiosmtpd.controller import Controller

    sink = SMTPSink("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if data_reply.startswith("250"):
                sink.received.append(envelope)
            return data_reply

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def _recording() -> tuple[list[tuple[str, int, str]], Any, Any]:
    events: list[tuple[str, int, str]] = []
    return (
        events,
        lambda i, r: events.append(("answer", i, r.status)),
        lambda i: events.append(("handed", i, "")),
    )


def test_each_answer_is_reported_once_and_as_soon_as_it_is_final(
    seeded: Session, settings: Settings, draft: int, smtp_server: Any, spare_smtp: SMTPSink
) -> None:
    """Through failover the journal still hears of every hand-over and every answer as it
    happens, under the caller's index."""
    messages = _messages(seeded, settings, draft, 6)
    smtp_server.responses = {m.recipient: "451 try later" for m in messages[3:]}
    backend = FailoverBackend(
        [SMTPBackend.from_url(smtp_server.url), SMTPBackend.from_url(spare_smtp.url)],
        switch_after=3,
    )
    events, on_result, on_handover = _recording()
    with backend:
        results = backend.send_each(messages, on_result, on_handover)
    assert [r.status for r in results] == ["sent"] * 6
    assert len(smtp_server.received) == 3 and len(spare_smtp.received) == 3
    # Each hand-over right before its answer, in order, with the caller's index: 3-5 went
    # through the spare as its 0-2 (refused at RCPT by the first, so never handed over there).
    first = [e for i in range(3) for e in (("handed", i, ""), ("answer", i, "sent"))]
    refused_at_rcpt = [("answer", i, "deferred") for i in range(3, 6)]  # never handed over
    moved = [e for i in range(3, 6) for e in (("handed", i, ""), ("answer", i, "sent"))]
    assert events == first + refused_at_rcpt + moved
    spare_got = [envelope.rcpt_tos[0] for envelope in spare_smtp.received]
    assert spare_got == [m.recipient for m in messages[3:]]


def test_a_message_refused_after_its_hand_over_is_reported_then_moved(
    seeded: Session, settings: Settings, draft: int, spare_smtp: SMTPSink
) -> None:
    """A 4xx to the end of data: the refusal is reported at once (a journal must not keep
    "handed over" as its last word while the next backend works), then the next backend's
    hand-over and answer for the same index, which is the one that counts."""
    messages = _messages(seeded, settings, draft, 4)
    with _smtp_server("452 4.3.1 insufficient storage") as full:
        backend = FailoverBackend(
            [SMTPBackend.from_url(full.url), SMTPBackend.from_url(spare_smtp.url)],
            switch_after=3,
        )
        events, on_result, on_handover = _recording()
        with backend:
            results = backend.send_each(messages, on_result, on_handover)
    assert [r.status for r in results] == ["sent"] * 4
    refused = [e for i in range(4) for e in (("handed", i, ""), ("answer", i, "deferred"))]
    moved = [e for i in range(4) for e in (("handed", i, ""), ("answer", i, "sent"))]
    assert events == refused + moved
    assert full.received == [] and len(spare_smtp.received) == 4 and backend.current == 1


def test_deferred_answers_are_reported_by_every_backend_that_tried(
    seeded: Session, settings: Settings, draft: int
) -> None:
    messages = _messages(seeded, settings, draft, 4)
    everyone = frozenset(m.recipient for m in messages)
    backend = FailoverBackend([MemoryBackend(defer=everyone), MemoryBackend(defer=everyone)])
    reported: list[tuple[int, str]] = []
    results = backend.send_each(messages, lambda i, r: reported.append((i, r.status)))
    assert [r.status for r in results] == ["deferred"] * 4
    # Each reported by both backends, the second's answer last.
    assert reported == [(i, "deferred") for i in range(4)] * 2
