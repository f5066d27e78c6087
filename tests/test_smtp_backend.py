"""The SMTP backend against a real aiosmtpd server on 127.0.0.1.

What arrives (headers, MIME structure, non-ASCII names), one connection per batch, per-recipient
4xx/5xx answers, the whole send through the ledger, and connections that drop or never open.
"""

from __future__ import annotations

import email
import email.policy
import gc
import html
import re
import smtplib
import socket
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

import pytest
from sqlmodel import Session, select

from newsletter import publish
from newsletter.backends import BackendError, SendStatus, smtp_socket
from newsletter.backends import smtp as smtp_module
from newsletter.backends.base import HandoverError
from newsletter.backends.smtp import SMTPBackend
from newsletter.backends.smtp_socket import KernelTimedSMTP, ReplyLines, kernel_timeout
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import MessageTemplate, Recipient
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import Delivery, EditionStatus, Subscriber
from tests.conftest import PINNED_DATE

JOSE = "José Álvarez"
RECIPIENTS = [
    Recipient(11, "ada@example.com", "Ada Lovelace"),
    Recipient(12, "jose@example.com", JOSE),
    Recipient(13, "anon@example.com", None),
]


def parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def template(session: Session, settings: Settings, draft: int) -> MessageTemplate:
    edition = store.get_edition(session, edition_id=draft)
    _, tmpl, _ = publish.prepare(session, edition=edition, settings=settings)
    return tmpl


@pytest.fixture
def build(template: MessageTemplate, settings: Settings) -> Callable[..., list[OutgoingMessage]]:
    signer = publish.signer_for(settings)

    def factory(recipients: list[Recipient]) -> list[OutgoingMessage]:
        return [template.build(r, signer, now=PINNED_DATE) for r in recipients]

    return factory


def batch(build: Callable[..., list[OutgoingMessage]], n: int) -> list[OutgoingMessage]:
    return build([Recipient(100 + i, f"r{i}@example.com", f"Reader {i}") for i in range(n)])


# --- a second aiosmtpd server that counts sessions and can misbehave -----------------------------


@dataclass
class Sink:
    """Counts EHLO/HELO (one per connection); can drop the connection or refuse at DATA.

    ``drop_at_rcpt`` / ``drop_after_data`` map a recipient to how many more times to drop
    (-1: always); ``stop_listening_at_rcpt`` also stops accepting new connections.
    """

    host: str
    port: int
    received: list[Any] = field(default_factory=list)
    greetings: int = 0
    data_responses: dict[str, str] = field(default_factory=dict)
    rcpt_responses: dict[str, str] = field(default_factory=dict)
    drop_at_rcpt: dict[str, int] = field(default_factory=dict)
    drop_after_data: dict[str, int] = field(default_factory=dict)
    stop_listening_at_rcpt: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Any = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?timeout=5"

    def stop(self) -> None:
        if self.controller is not None:
            controller, self.controller = self.controller, None
            controller.stop()

    def rcpts(self) -> list[str]:
        return [r for e in self.received for r in e.rcpt_tos]


def _take(rules: dict[str, int], address: str) -> bool:
    left = rules.get(address.lower(), 0)
    if left == 0:
        return False
    if left > 0:
        rules[address.lower()] = left - 1
    return True


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """Run twice: once as a plain server, once advertising PIPELINING (RFC 2920), where the
    client sends each envelope in one write and the next message's envelope with the body."""
    from aiosmtpd.controller import Controller

    box = Sink("127.0.0.1", free_port())
    pipelining: bool = request.param

    class Handler:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            with box.lock:
                box.greetings += 1
            session.host_name = hostname
            if pipelining:  # aiosmtpd reads commands in order, so it can take pipelined input
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
            with box.lock:
                box.greetings += 1
            session.host_name = hostname
            return f"250 {server.hostname}"

        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
        ) -> str:
            if address.lower() in box.stop_listening_at_rcpt:
                box.controller.server.close()  # no new connections from now on
                server.transport.close()
                return "250 OK"
            if _take(box.drop_at_rcpt, address):
                server.transport.close()
                return "250 OK"
            if address.lower() in box.rcpt_responses:
                return box.rcpt_responses[address.lower()]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            rcpt = envelope.rcpt_tos[0].lower()
            reply = box.data_responses.get(rcpt)
            if reply:
                return reply
            with box.lock:
                box.received.append(envelope)
            if _take(box.drop_after_data, rcpt):
                server.transport.close()  # stored, but the 250 never reaches the client
            return "250 Message accepted for delivery"

    box.controller = Controller(Handler(), hostname=box.host, port=box.port)
    box.controller.start()
    try:
        yield box
    finally:
        box.stop()


# --- what arrives ---------------------------------------------------------------------------


def test_messages_arrive_with_headers_and_mime_structure(
    smtp_server: Any,
    build: Callable[..., list[OutgoingMessage]],
    template: MessageTemplate,
    settings: Settings,
    draft: int,
) -> None:
    messages = build(RECIPIENTS)
    with SMTPBackend.from_url(smtp_server.url) as backend:
        results = backend.send_messages(messages)
    assert [r.status for r in results] == [SendStatus.sent] * 3

    assert len(smtp_server.received) == 3
    seen_ids = set()
    for envelope, recipient, sent in zip(smtp_server.received, RECIPIENTS, messages, strict=True):
        assert envelope.mail_from == "verdicts@news.example.com"
        assert envelope.rcpt_tos == [recipient.email]
        assert all(b < 0x80 for b in envelope.content), "the message is 7-bit clean"
        msg = parse(envelope.content)

        to = msg["To"].addresses
        assert [a.addr_spec for a in to] == [recipient.email]
        assert to[0].display_name == (recipient.name or "")
        sender = msg["From"].addresses
        assert [(a.display_name, a.addr_spec) for a in sender] == [
            ("Weekly AI Tool Verdicts", "verdicts@news.example.com")
        ]
        assert msg["Subject"] == template.rendered.subject
        assert msg["Subject"].strip()
        sent_at = msg["Date"].datetime
        assert sent_at.tzinfo is not None
        assert sent_at.timestamp() == PINNED_DATE  # the Date the sender's clock gave

        message_id = msg["Message-ID"]
        assert message_id == sent.message_id
        assert re.fullmatch(
            rf"<nl\.{draft}\.{recipient.subscriber_id}\.[0-9a-f]+@[^>]+>", message_id
        )
        seen_ids.add(message_id)

        assert msg["List-Id"].endswith(f"<{settings.newsletter}.news.example.com>")
        unsubscribe = msg["List-Unsubscribe"]
        match = re.fullmatch(r"<(https://news\.example\.com/u/[^<>\s]+)>", unsubscribe)
        assert match, unsubscribe
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, page = parts[0].get_content(), parts[1].get_content()
        greeting = recipient.name or "there"
        assert f"Hi {greeting}," in text
        assert f"Hi {greeting}," in html.unescape(page)
        # the one-click link in the header is the same one the reader sees in both bodies
        assert match.group(1) in text
        assert html.escape(match.group(1)) in page or match.group(1) in page
    assert len(seen_ids) == 3, "Message-ID is unique per recipient"


def test_a_template_message_is_sent_without_ever_joining_its_bytes(
    smtp_server: Any, build: Callable[..., list[OutgoingMessage]], monkeypatch: Any
) -> None:
    """SMTP writes a built message's stuffed pieces and never reads ``data``: no 53 KB join
    per message, and none held while a chunk is in flight. What arrives is the message."""
    messages = build(RECIPIENTS)
    expected = [m.data for m in messages]
    assert all(isinstance(m.raw, tuple) for m in messages)

    def joined(message: OutgoingMessage) -> bytes:
        raise AssertionError("the SMTP send joined a message's bytes")

    monkeypatch.setattr(OutgoingMessage, "data", property(joined))
    with SMTPBackend.from_url(smtp_server.url) as backend:
        results = backend.send_messages(messages)
    monkeypatch.undo()
    assert [r.status for r in results] == [SendStatus.sent] * 3
    assert [e.content for e in smtp_server.received] == expected
    assert [parse(e.content)["Message-ID"] for e in smtp_server.received] == [
        m.message_id for m in messages
    ]


def test_non_ascii_name_round_trips(
    smtp_server: Any, build: Callable[..., list[OutgoingMessage]]
) -> None:
    (message,) = build([Recipient(7, "jose@example.com", JOSE)])
    assert JOSE.encode() not in message.data, "encoded on the wire, not raw UTF-8"
    results = SMTPBackend.from_url(smtp_server.url).send_messages([message])
    assert results[0].status == SendStatus.sent

    msg = parse(smtp_server.received[0].content)
    assert str(msg["To"]) == f"{JOSE} <jose@example.com>"
    assert msg["To"].addresses[0].display_name == JOSE
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    text = plain.get_content()
    assert f"Hi {JOSE}," in text
    page = rich.get_content()
    assert f"Hi {JOSE}," in html.unescape(page)


# --- one connection per batch ---------------------------------------------------------------


def test_one_connection_is_reused_for_a_batch(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 6)
    sink.data_responses["r2@example.com"] = "554 5.6.0 content refused"
    with SMTPBackend.from_url(sink.url) as backend:
        first = backend.send_messages(messages[:4])
        second = backend.send_messages(messages[4:])
    statuses = [r.status for r in first + second]
    assert statuses == [SendStatus.sent] * 2 + [SendStatus.rejected] + [SendStatus.sent] * 3
    assert sink.rcpts() == [m.recipient for m in messages if m.recipient != "r2@example.com"]
    assert sink.greetings == 1, "a refusal doesn't cost a new connection either"


def test_a_batch_outside_with_uses_one_connection_of_its_own(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 4)
    backend = SMTPBackend.from_url(sink.url)
    backend.send_messages(messages[:2])
    assert sink.greetings == 1
    backend.send_messages(messages[2:])
    assert sink.greetings == 2
    assert backend.connection is None
    assert len(sink.received) == 4


# --- per-recipient answers ------------------------------------------------------------------


def test_4xx_defers_and_5xx_rejects_while_the_rest_are_sent(
    smtp_server: Any, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 5)
    smtp_server.responses["r1@example.com"] = "450 4.2.1 mailbox busy"
    smtp_server.responses["r3@example.com"] = "550 5.1.1 no such user"
    with SMTPBackend.from_url(smtp_server.url) as backend:
        results = backend.send_messages(messages)

    assert [r.status for r in results] == [
        SendStatus.sent,
        SendStatus.deferred,
        SendStatus.sent,
        SendStatus.rejected,
        SendStatus.sent,
    ]
    assert results[1].code == 450 and "mailbox busy" in results[1].detail
    assert results[3].code == 550 and "no such user" in results[3].detail
    assert results[1].status.transient and not results[3].status.transient
    assert [e.rcpt_tos for e in smtp_server.received] == [
        ["r0@example.com"],
        ["r2@example.com"],
        ["r4@example.com"],
    ]


def test_4xx_and_5xx_at_data_are_deferred_and_rejected(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 3)
    sink.data_responses["r0@example.com"] = "452 4.3.1 insufficient storage"
    sink.data_responses["r1@example.com"] = "554 5.7.1 spam"
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert [(r.status, r.code) for r in results] == [
        (SendStatus.deferred, 452),
        (SendStatus.rejected, 554),
        (SendStatus.sent, 250),
    ]
    assert sink.rcpts() == ["r2@example.com"]


# --- the whole send through the ledger ------------------------------------------------------


def test_send_edition_over_smtp_records_failures_and_resends_only_deferred(
    session: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
    smtp_server: Any,
) -> None:
    people = add_subscribers(6)
    by_email = {p.email: p for p in people}
    settings = settings.model_copy(update={"retry_base_seconds": 0})  # retry at once
    smtp_server.responses["sub1@example.com"] = "550 5.1.1 no such user"
    smtp_server.responses["sub4@example.com"] = "450 4.2.1 mailbox busy"

    report = publish.send_edition(
        session, edition_id=draft, settings=settings, backend=SMTPBackend.from_url(smtp_server.url)
    )
    assert (report.run.sent, report.run.failed, report.run.deferred) == (4, 1, 1)
    totals = ledger.counts(session, edition_id=draft)
    assert totals["sent"] == 4
    assert totals["failed"] == 1
    assert totals["deferred"] == 1
    assert totals["pending"] == 0
    received = sorted(r for e in smtp_server.received for r in e.rcpt_tos)
    assert received == [
        "sub0@example.com",
        "sub2@example.com",
        "sub3@example.com",
        "sub5@example.com",
    ]

    session.expire_all()
    rows = {
        d.subscriber_id: d
        for d in session.exec(select(Delivery).where(Delivery.edition_id == draft)).all()
    }
    failed = rows[by_email["sub1@example.com"].id or 0]
    assert failed.status == "failed" and failed.error_code == 550
    assert failed.error_text and "no such user" in failed.error_text
    deferred = rows[by_email["sub4@example.com"].id or 0]
    assert deferred.status == "deferred" and deferred.error_code == 450
    sent = rows[by_email["sub0@example.com"].id or 0]
    assert sent.status == "sent" and sent.error_code is None and sent.message_id
    assert store.get_edition(session, edition_id=draft).status == EditionStatus.sending

    # The mailbox is no longer busy: a second run sends the deferred one, and only it.
    del smtp_server.responses["sub4@example.com"]
    count_before = len(smtp_server.received)
    again = publish.send_edition(
        session, edition_id=draft, settings=settings, backend=SMTPBackend.from_url(smtp_server.url)
    )
    assert len(smtp_server.received) == count_before + 1
    assert smtp_server.received[-1].rcpt_tos == ["sub4@example.com"]
    assert (again.run.sent, again.run.failed, again.run.deferred) == (1, 0, 0)
    totals = ledger.counts(session, edition_id=draft)
    assert (totals["sent"], totals["failed"], totals["deferred"], totals["pending"]) == (5, 1, 0, 0)
    session.expire_all()
    assert store.get_edition(session, edition_id=draft).status == EditionStatus.sent

    # A third run finds nothing to do.
    publish.send_edition(
        session, edition_id=draft, settings=settings, backend=SMTPBackend.from_url(smtp_server.url)
    )
    assert len(smtp_server.received) == count_before + 1


# --- connections that drop or never open ----------------------------------------------------


def test_nothing_listening_raises_backend_error() -> None:
    backend = SMTPBackend.from_url(f"smtp://user:s3cret@127.0.0.1:{free_port()}?timeout=2")
    message = OutgoingMessage("a@x.com", "b@y.com", "<m@x>", b"Subject: x\r\n\r\nhi\r\n", "k")
    with pytest.raises(BackendError) as excinfo:
        backend.send_messages([message])
    assert "s3cret" not in str(excinfo.value)
    with pytest.raises(BackendError):
        with backend:
            pass
    assert backend.connection is None


def test_dropped_connection_is_reopened_and_the_batch_continues(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 4)
    sink.drop_at_rcpt["r1@example.com"] = 1  # once
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert [r.status for r in results] == [SendStatus.sent] * 4
    assert sink.rcpts() == [m.recipient for m in messages], "each delivered exactly once"
    assert sink.greetings == 2


def test_connection_dropping_every_time_gives_a_transient_result(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 3)
    sink.drop_at_rcpt["r1@example.com"] = -1  # always
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert results[0].status == SendStatus.sent
    assert results[1].status in (SendStatus.unknown, SendStatus.deferred)
    assert results[1].status.transient and results[1].code is None
    assert "connection" in results[1].detail
    assert results[2].status == SendStatus.sent
    assert sink.rcpts() == ["r0@example.com", "r2@example.com"]


def test_server_going_away_mid_batch_defers_the_rest(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 4)
    sink.stop_listening_at_rcpt.add("r1@example.com")
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert results[0].status == SendStatus.sent
    assert all(r.status.transient for r in results[1:]), results
    assert all(r.status == SendStatus.deferred for r in results[2:]), results
    assert sink.rcpts() == ["r0@example.com"]
    assert backend.connection is None


def test_server_stopped_between_batches_defers_not_crashes(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 3)
    with SMTPBackend.from_url(sink.url) as backend:
        first = backend.send_messages(messages[:1])
        sink.stop()
        time.sleep(0.05)
        rest = backend.send_messages(messages[1:])
    assert first[0].status == SendStatus.sent
    assert len(rest) == 2
    assert all(r.status.transient for r in rest), rest
    assert sink.rcpts() == ["r0@example.com"]


def test_connection_lost_after_data_is_not_resent(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    messages = batch(build, 3)
    sink.drop_after_data["r1@example.com"] = 1  # stored, then the reply is lost once
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert sink.rcpts().count("r1@example.com") == 1, "delivered twice"
    assert results[1].status == SendStatus.unknown
    assert results[0].status == results[2].status == SendStatus.sent


def test_failed_login_closes_the_socket(sink: Sink) -> None:
    backend = SMTPBackend.from_url(f"smtp://user:s3cret@{sink.host}:{sink.port}?timeout=5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            backend.open()  # aiosmtpd here offers no AUTH
        except BackendError as exc:
            assert "s3cret" not in str(exc)
        else:
            pytest.fail("open() must fail without AUTH")
        gc.collect()
    assert backend.connection is None
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]


def test_with_pipelining_each_message_costs_one_write_and_one_round_trip(
    sink: Sink, build: Callable[..., list[OutgoingMessage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next envelope rides with the previous body: N messages, N + 1 writes (2N without),
    and a refusal in the middle still lands on the right message."""
    messages = batch(build, 6)
    sink.data_responses["r2@example.com"] = "554 5.7.1 spam"
    backend = SMTPBackend.from_url(sink.url)
    writes = 0
    with backend:
        assert backend.connection is not None
        original = backend.connection.send

        def counting(data: Any) -> None:
            nonlocal writes
            writes += 1
            original(data)

        monkeypatch.setattr(backend.connection, "send", counting)
        gathered = smtp_module._send_parts

        def counting_parts(conn: Any, parts: Any) -> None:  # a body and the next envelope
            nonlocal writes
            writes += 1
            gathered(conn, parts)

        monkeypatch.setattr(smtp_module, "_send_parts", counting_parts)
        results = backend.send_messages(messages)
        backend_features = dict(backend.connection.esmtp_features) if backend.connection else None
    statuses = [r.status for r in results]
    assert statuses == [SendStatus.sent] * 2 + [SendStatus.rejected] + [SendStatus.sent] * 3
    assert sink.rcpts() == [f"r{i}@example.com" for i in (0, 1, 3, 4, 5)]
    # Besides EHLO and QUIT: with PIPELINING one write per message plus the first envelope;
    # without, MAIL, RCPT, DATA and the body each on their own.
    assert backend_features is not None
    if "pipelining" in backend_features:
        assert writes - 2 == len(messages) + 1
    else:
        assert writes - 2 == 4 * len(messages)


def test_a_refused_recipient_between_accepted_ones(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    """With pipelining the refused RCPT arrives as the answer to an envelope sent ahead with
    the previous body: it must land on its own message and leave the connection clean."""
    messages = batch(build, 4)
    sink.rcpt_responses["r1@example.com"] = "550 5.1.1 no such user"
    sink.rcpt_responses["r2@example.com"] = "451 4.3.0 try later"
    with SMTPBackend.from_url(sink.url) as backend:
        results = backend.send_messages(messages)
    assert [(r.status, r.code) for r in results] == [
        (SendStatus.sent, 250),
        (SendStatus.rejected, 550),
        (SendStatus.deferred, 451),
        (SendStatus.sent, 250),
    ]
    assert sink.rcpts() == ["r0@example.com", "r3@example.com"]
    assert sink.greetings == 1  # one connection throughout


def test_a_caller_stopping_mid_batch_leaves_no_stray_replies(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    """If the caller raises from its per-answer callback (say, its journal's disk is full)
    while an envelope went out ahead, the next batch must not read that envelope's replies
    as its own."""
    first, second = batch(build, 3), batch(build, 5)[3:]
    with SMTPBackend.from_url(sink.url) as backend:

        def stop(index: int, result: Any) -> None:
            if index == 0:
                raise RuntimeError("journal disk full")

        with pytest.raises(RuntimeError):
            backend.send_each(first, stop)
        results = backend.send_messages(second)
    assert [r.status for r in results] == [SendStatus.sent, SendStatus.sent]
    assert sink.rcpts() == ["r0@example.com", "r3@example.com", "r4@example.com"]


def test_hand_overs_come_right_before_their_answers(sink: Sink, build: Any) -> None:
    messages = batch(build, 3)
    events: list[tuple[str, int]] = []
    with SMTPBackend.from_url(sink.url) as backend:
        backend.send_each(
            messages,
            lambda i, r: events.append(("answer", i)),
            lambda i: events.append(("handed", i)),
        )
    assert events == [e for i in range(3) for e in (("handed", i), ("answer", i))]


def test_a_failing_hand_over_callback_stops_the_send_not_as_a_lost_connection(
    sink: Sink, build: Any
) -> None:
    """A journal that can't be written (disk full: an OSError) must not be mistaken for a
    connection lost during DATA (that would record the message ``unknown`` for the wrong reason
    and carry on): the send stops, and the next batch uses a clean connection."""
    first, second = batch(build, 3), batch(build, 5)[3:]
    answers: list[int] = []

    def full_disk(index: int) -> None:
        if index == 1:
            raise OSError(28, "No space left on device")

    with SMTPBackend.from_url(sink.url) as backend:
        with pytest.raises(HandoverError, match="No space left"):
            backend.send_each(first, lambda i, r: answers.append(i), full_disk)
        results = backend.send_messages(second)
    assert answers == [0]  # message 1 has no answer
    assert [r.status for r in results] == [SendStatus.sent, SendStatus.sent]
    # Its hand-over is recorded before the dot is written: it failed, so message 1 never left.
    assert sink.rcpts() == ["r0@example.com", "r3@example.com", "r4@example.com"]


# --- TLS: STARTTLS and implicit TLS (smtps://) ------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_messages_over_tls_arrive_whole_and_pipelined(
    mode: str, tmp_path: Any, build: Callable[..., list[OutgoingMessage]]
) -> None:
    """Over TLS the body and the next envelope still go out together (TLS sockets have no
    gathering send, so they are joined first), and every message arrives byte for byte."""
    import ssl

    from aiosmtpd.controller import Controller

    from tests.mailserver import write_certificate

    cert, key = write_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[Any] = []

    class Handler:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            session.host_name = hostname
            responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            tls = session.ssl is not None or server.transport.get_extra_info("ssl_object")
            received.append((bool(tls), envelope))
            return "250 OK"

    port = free_port()
    if mode == "starttls":
        controller = Controller(
            Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
        url = f"smtp://127.0.0.1:{port}?starttls=1&verify=0&timeout=5"
    else:
        controller = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=context)
        url = f"smtps://127.0.0.1:{port}?verify=0&timeout=5"
    controller.start()
    try:
        messages = batch(build, 4)
        backend = SMTPBackend.from_url(url)
        with backend:
            assert backend.connection is not None and backend.connection.sock is not None
            # TLS keeps smtplib's own socket and Python's timeout (see smtp_socket).
            assert type(backend.connection) is not KernelTimedSMTP
            assert backend.connection.sock.gettimeout() == 5
            results = backend.send_messages(messages)
    finally:
        controller.stop()
    assert [r.status for r in results] == [SendStatus.sent] * 4
    assert [e.rcpt_tos for _, e in received] == [[f"r{i}@example.com"] for i in range(4)]
    assert all(encrypted for encrypted, _ in received)
    for message, (_, envelope) in zip(messages, received, strict=True):
        assert envelope.original_content.replace(b"\r\n", b"\n") == message.data.replace(
            b"\r\n", b"\n"
        )


def _silent_after_data(listener: socket.socket, stop: threading.Event) -> None:
    """A server that answers everything up to the message's end-of-data, then says nothing
    (a hung MTA): the client must give up after its timeout, not wait for ever."""
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"220 hung ready\r\n")
        buffer = b""
        while not stop.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\r\n" in buffer and not buffer.startswith(b"Subject"):
                line, buffer = buffer.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-hung\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    buffer = b"Subject" + buffer  # the message: never answered
                elif verb in (b"MAIL", b"RCPT"):
                    conn.sendall(b"250 ok\r\n")
        stop.wait(10)


def test_a_server_that_stops_answering_times_out_as_unknown(
    build: Callable[..., list[OutgoingMessage]],
) -> None:
    """The connection's timeout holds mid-send: a message whose answer never comes is
    ``unknown`` after the timeout (it may have been delivered), saying it timed out; the
    send does not hang."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_silent_after_data, args=(listener, stop), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        backend = SMTPBackend.from_url(f"smtp://127.0.0.1:{port}?timeout=0.5")
        started = time.monotonic()
        try:
            with backend:
                results = backend.send_messages(batch(build, 1))
        finally:
            stop.set()
        took = time.monotonic() - started
        server.join(5)
    assert [r.status for r in results] == [SendStatus.unknown]
    assert "timed out" in (results[0].detail or ""), results[0].detail
    assert 0.4 < took < 5, took


def test_a_plain_connection_is_blocking_with_its_timeout_kept_by_the_kernel(
    sink: Sink, build: Callable[..., list[OutgoingMessage]]
) -> None:
    """Plain TCP: no Python timeout (which polls before every send and receive), the URL's
    timeout set on the socket for the kernel to keep, replies read by the engine's reader;
    messages go out as before."""
    backend = SMTPBackend.from_url(sink.url)  # ?timeout=5
    with backend:
        conn = backend.connection
        assert isinstance(conn, KernelTimedSMTP) and conn.sock is not None
        assert conn.sock.gettimeout() is None
        five = struct.pack("ll", 5, 0)
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            assert conn.sock.getsockopt(socket.SOL_SOCKET, option, len(five)) == five
        assert isinstance(conn.file, ReplyLines)
        results = backend.send_messages(batch(build, 3))
    assert [r.status for r in results] == [SendStatus.sent] * 3
    assert sink.rcpts() == [f"r{i}@example.com" for i in range(3)]


@pytest.mark.parametrize("seconds", [30, 2.9999999, 0.25, 1e-9])
def test_the_kernel_keeps_the_timeout_it_is_given(seconds: float) -> None:
    """A time just under a whole second is set (not a million microseconds, which the kernel
    refuses), and one under a microsecond is a limit, never 0 (none). The kernel keeps it in
    its own ticks, rounded up, so what it reports is at least the time asked for."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        kernel_timeout(ours, seconds)
        size = struct.calcsize("ll")
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            whole, micro = struct.unpack("ll", ours.getsockopt(socket.SOL_SOCKET, option, size))
            assert 0 < seconds <= whole + micro / 1e6 < seconds + 0.02


def test_the_reply_reader_reads_what_smtplib_reads() -> None:
    """Over a socket pair: replies that arrive together are read one by one, a multi-line
    reply is joined, a line over smtplib's limit is refused, a receive that outlives the
    timeout says "timed out", and a closed connection is a disconnection."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        kernel_timeout(ours, 0.2)
        conn = KernelTimedSMTP()
        conn.sock = ours
        theirs.sendall(b"250-first\r\n250 last\r\n354 go ahead\r\n25")
        assert conn.getreply() == (250, b"first\nlast")
        assert conn.getreply() == (354, b"go ahead")
        theirs.sendall(b"0 ok\r\n")  # the rest of a reply cut across two receives
        assert conn.getreply() == (250, b"ok")
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            conn.getreply()
        assert 0.15 < time.monotonic() - started < 2
    a, b = socket.socketpair()  # the limit and the end of the stream, on the reader itself
    with a, b:
        lines = ReplyLines(a)
        b.sendall(b"x" * 10 + b"\r\n" + b"tail")
        b.close()
        assert lines.readline(4) == b"xxxx"
        assert lines.readline() == b"xxxxxx\r\n"
        assert lines.readline() == b"tail"
        assert lines.readline() == b""
    c, d = socket.socketpair()
    with c, d:
        conn = KernelTimedSMTP()
        conn.sock = c
        d.sendall(b"250 " + b"y" * 9000 + b"\r\n")
        with pytest.raises(smtplib.SMTPResponseException, match="Line too long"):
            conn.getreply()


_ODD_REPLIES = (
    b"250 ok\r\n"
    b"354 go ahead  \t\r\n"  # trailing blanks go
    b"25\r\n"  # short: int() reads 25, as smtplib does
    b"abc not a code\r\n"  # -1, as smtplib says
    b"250\r\n"  # a code and nothing else
    b"221 bare line feed\n"
    b"250-first\r\n250-second\r\n250 third\r\n"  # multi-line: read line by line
    b"abc-not a code either\r\n"  # a dash after a bad code: -1, no continuation
    b"250 " + b"y" * (8192 - 6) + b"\r\n"  # the longest line smtplib accepts
    b"452 4.3.1 later\r\n"
)


def test_the_one_pass_parse_answers_as_smtplib_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes through smtplib's own reader and through the engine's: the same code
    and text for every reply, however odd, and the same refusal of a line one byte over
    smtplib's limit. The engine's reader parses what it already holds in one pass: only the
    first reply (nothing received yet), the two whose fourth byte is a dash and the line over
    the limit go through smtplib's loop."""
    assert smtp_socket._MAXLINE == smtplib._MAXLINE  # type: ignore[attr-defined]  # private
    loops = [0]
    smtplib_getreply = smtplib.SMTP.getreply

    def counted(self: smtplib.SMTP) -> tuple[int, bytes]:
        loops[0] += 1
        return smtplib_getreply(self)

    monkeypatch.setattr(smtplib.SMTP, "getreply", counted)
    answers, fallbacks = [], []
    for smtp_class in (smtplib.SMTP, KernelTimedSMTP):
        loops[0] = 0
        ours, theirs = socket.socketpair()
        with ours, theirs:
            conn = smtp_class()
            conn.sock = ours
            theirs.sendall(_ODD_REPLIES + b"250 " + b"z" * (8193 - 6) + b"\r\n")
            answers.append([conn.getreply() for _ in range(10)])
            with pytest.raises(smtplib.SMTPResponseException, match="Line too long"):
                conn.getreply()
        fallbacks.append(loops[0])
    assert answers[1] == answers[0]
    assert answers[1][2:4] == [(25, b""), (-1, b"not a code")]
    assert answers[1][7] == (-1, b"not a code either")
    assert fallbacks == [11, 4]  # smtplib: every reply; ours: first, multi-line, dash, too long


class _Trickle:
    """A socket whose ``sendmsg`` takes only some bytes each call (as a full send buffer
    does), cutting through pieces at every kind of place."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes, self.received = sizes, b""

    def sendmsg(self, buffers: list[bytes | memoryview]) -> int:
        room = self.sizes.pop(0) if self.sizes else 1 << 20
        taken = b"".join(bytes(b) for b in buffers)[:room]
        self.received += taken
        return len(taken)


def test_a_gathering_write_the_kernel_takes_in_parts_arrives_whole_and_in_order() -> None:
    pieces = (b"MAIL", b"", b" FROM:<a@example.com>\r\n", b"x" * 100, b"\r\n.\r\n", b"DATA")
    for sizes in ([1] * 140, [3, 50, 7, 200], [4, 23, 1, 100], [len(b"".join(pieces))], []):
        conn = smtplib.SMTP()
        trickle = _Trickle(list(sizes))
        conn.sock = cast(socket.socket, trickle)  # the one method the write uses
        smtp_module._send_parts(conn, pieces)
        assert trickle.received == b"".join(pieces), sizes
