"""Bounce and complaint mail in, over the real inbound listener (SMTP and LMTP, aiosmtpd) and
a real SQLite store: each provider's DSN or ARF report, re-addressed to a delivery the engine
really sent, suppresses or counts exactly as a provider webhook does, once.

The samples (tests/fixtures/bounces) carry placeholders for the failed recipient, the
original Message-ID and the VERP return path; :func:`report_for` fills in the real ones.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter import publish
from newsletter.backends import memory
from newsletter.backends.memory import MemoryBackend
from newsletter.config import Settings
from newsletter.edition.verp import ReturnPaths
from newsletter.service.bounce_intake import Intake, take
from newsletter.service.bounce_server import BounceHandler, BounceServer
from newsletter.storage import store
from newsletter.storage.models import (
    Delivery,
    EditionStatus,
    MailEvent,
    Subscriber,
    Subscription,
    User,
)
from tests.conftest import SECRET, free_port

SAMPLES = Path(__file__).parent / "fixtures" / "bounces"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
BOUNCES = "bounces@news.example.com"
#: The placeholders in every sample.
RECIPIENT = "reader@example.net"
MESSAGE_ID = "<nl.7.3.0123456789@example.com>"
RETURN_PATH = "bounces+7-3-abcdefghijklmnop@example.com"

#: sample -> (what it does to the address, how the report is addressed: to the VERP return
#: path, or to the bare bounce address with the return path only inside the report)
SAMPLE_KINDS = {
    "gmail_user_unknown.eml": ("bounced", "verp"),
    "yahoo_user_unknown.eml": ("bounced", "verp"),
    "microsoft_recipient_not_found.eml": ("bounced", "verp"),
    "postfix_user_unknown.eml": ("bounced", "verp"),
    "exim_dsn.eml": ("bounced", "verp"),
    "exim_plain.eml": ("bounced", "verp"),
    "gmail_mailbox_full.eml": ("soft", "verp"),
    "policy_block.eml": ("blocked", "verp"),
    "yahoo_arf_abuse.eml": ("complained", "bare"),
    "microsoft_jmrp_abuse.eml": ("complained", "bare"),
    "qmail_plain.eml": ("bounced", "verp"),
    "postfix_two_recipients.eml": ("bounced", "verp"),
    "postfix_delayed.eml": ("nothing", "verp"),
    "exim_warning.eml": ("nothing", "verp"),
    "auto_reply.eml": ("nothing", "verp"),
    "arf_not_spam.eml": ("nothing", "bare"),
}


@dataclass
class Sent:
    """An edition the engine sent through the memory backend: who got which message."""

    edition_id: int
    people: dict[str, Subscriber]
    message_ids: dict[str, str]
    return_paths: dict[str, str]


@pytest.fixture(name="verp_settings")
def verp_settings_fixture(settings: Settings) -> Settings:
    return settings.model_copy(update={"bounce_address": BOUNCES})


@pytest.fixture(name="sent")
def sent_fixture(session: Session, verp_settings: Settings, draft: int) -> Sent:
    newsletter = publish.default_newsletter(session, verp_settings)
    emails = [f"p{i}@example.org" for i in range(len(SAMPLE_KINDS) + 2)]
    people = [Subscriber(email=e, email_key=e) for e in emails]
    session.add_all(people)
    session.flush()
    session.add_all(
        Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0) for p in people
    )
    session.commit()
    publish.send_edition(
        session,
        edition_id=draft,
        settings=verp_settings,
        backend=MemoryBackend(),
        options=publish.SendOptions(clock=lambda: NOW),
    )
    return Sent(
        draft,
        {p.email: p for p in people},
        {m.recipient: m.message_id for m in memory.outbox},
        {m.recipient: m.sender for m in memory.outbox},
    )


def report_for(name: str, sent: Sent, email: str, *, return_path: str | None = None) -> bytes:
    # On the wire every line ends in CRLF (some samples are stored with LF).
    raw = (SAMPLES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return (
        raw.replace(RECIPIENT.encode(), email.encode())
        .replace(MESSAGE_ID.encode(), sent.message_ids[email].encode())
        .replace(RETURN_PATH.encode(), (return_path or sent.return_paths[email]).encode())
    )


class _LHLOOnly(smtplib.LMTP):
    """An LMTP client that greets with LHLO only: smtplib's ``sendmail`` falls back to HELO
    when the greeting is refused, and LMTP has no HELO (RFC 2033)."""

    def ehlo_or_helo_if_needed(self) -> None:
        if self.helo_resp is None and self.ehlo_resp is None:
            self.ehlo()


@dataclass
class Listener:
    host: str
    port: int
    lmtp: bool
    server: BounceServer

    def client(self) -> smtplib.SMTP:
        if self.lmtp:
            return _LHLOOnly(self.host, self.port, timeout=10)
        return smtplib.SMTP(self.host, self.port, timeout=10)


def start_listener(
    engine: Engine, settings: Settings, *, lmtp: bool, accept: tuple[str, ...] = ()
) -> Listener:
    def handle(raw: bytes, rcpts: list[str]) -> Intake:
        with Session(engine) as session:
            return take(session, settings, raw, envelope=rcpts, now=NOW)

    paths = ReturnPaths(settings.bounce_address, [SECRET])
    port = free_port()
    server = BounceServer(
        BounceHandler(handle, paths, accept=accept, lmtp=lmtp),
        host="127.0.0.1",
        port=port,
        lmtp=lmtp,
    )
    server.start()
    return Listener("127.0.0.1", port, lmtp, server)


@pytest.fixture(params=[False, True], ids=["smtp", "lmtp"])
def listener(
    request: pytest.FixtureRequest, engine: Engine, verp_settings: Settings
) -> Iterator[Listener]:
    box = start_listener(engine, verp_settings, lmtp=request.param)
    try:
        yield box
    finally:
        box.server.stop()


def deliver(box: Listener, raw: bytes, rcpt: str) -> Any:
    with box.client() as client:
        return client.sendmail("", [rcpt], raw)


def test_every_providers_report_acts_once_on_the_delivery_it_names(
    session: Session, sent: Sent, listener: Listener
) -> None:
    emails = iter(sent.people)
    used: dict[str, str] = {}
    for name, (_, addressed) in SAMPLE_KINDS.items():
        email = next(emails)
        used[name] = email
        rcpt = sent.return_paths[email] if addressed == "verp" else BOUNCES
        refused = deliver(listener, report_for(name, sent, email), rcpt)
        assert refused == {}, name
    session.expire_all()
    for name, (effect, _) in SAMPLE_KINDS.items():
        person = session.get(Subscriber, sent.people[used[name]].id)
        assert person is not None
        if effect == "bounced":
            assert person.suppressed == "bounced", name
        elif effect == "complained":
            assert person.suppressed == "complained", name
        elif effect == "soft":
            assert (person.suppressed, person.soft_bounces) == (None, 1), name
        else:  # nothing, or blocked: a 5.7.1 spam block is not the address's fault
            assert (person.suppressed, person.soft_bounces) == (None, 0), name
    events = session.exec(select(MailEvent)).all()
    acted = [n for n, (effect, _) in SAMPLE_KINDS.items() if effect != "nothing"]
    assert len(events) == len(acted)
    by_subscriber = {e.subscriber_id: e for e in events}
    for name in acted:
        event = by_subscriber[sent.people[used[name]].id]
        delivery = session.get(Delivery, event.delivery_id)
        assert delivery is not None and delivery.edition_id == sent.edition_id, name
        assert event.provider == ("arf" if SAMPLE_KINDS[name][0] == "complained" else "dsn")
    # The same report again (an MTA retrying, a poll after a crash) counts once.
    first = used["gmail_mailbox_full.eml"]
    deliver(listener, report_for("gmail_mailbox_full.eml", sent, first), sent.return_paths[first])
    session.expire_all()
    assert session.get_one(Subscriber, sent.people[first].id).soft_bounces == 1
    assert len(session.exec(select(MailEvent)).all()) == len(acted)


def test_a_forged_return_path_is_stored_but_acts_on_nobody(
    session: Session, sent: Sent, listener: Listener
) -> None:
    victim = next(iter(sent.people))
    genuine = sent.return_paths[victim]
    local, domain = genuine.split("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
    deliver(
        listener, report_for("gmail_user_unknown.eml", sent, victim, return_path=forged), forged
    )
    session.expire_all()
    assert session.get_one(Subscriber, sent.people[victim].id).suppressed is None
    (event,) = session.exec(select(MailEvent)).all()
    assert (event.subscriber_id, event.delivery_id, event.email_key) == (None, None, victim)


def test_mail_for_anyone_else_is_refused_at_rcpt(listener: Listener) -> None:
    with listener.client() as client:
        if listener.lmtp:
            client.ehlo()
        else:
            client.ehlo()
        client.mail("")
        code, text = client.rcpt("postmaster@news.example.com")
        assert code == 550 and b"not a bounce address" in text
        code, _ = client.rcpt("bounces+anything@news.example.com")
        assert code == 250


def test_lmtp_answers_once_per_recipient(
    engine: Engine, verp_settings: Settings, sent: Sent
) -> None:
    box = start_listener(engine, verp_settings, lmtp=True, accept=("fbl@news.example.com",))
    try:
        a, b = list(sent.people)[:2]
        raw = report_for("yahoo_arf_abuse.eml", sent, a)
        with smtplib.LMTP(box.host, box.port, timeout=10) as client:
            client.ehlo()
            client.mail("")
            assert client.rcpt(BOUNCES)[0] == 250
            assert client.rcpt("fbl@news.example.com")[0] == 250
            client.putcmd("data")
            assert client.getreply()[0] == 354
            client.send(raw.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
            # RFC 2033: one reply per accepted recipient (smtplib.LMTP reads only one).
            replies = [client.getreply() for _ in range(2)]
            assert [code for code, _ in replies] == [250, 250]
        with Session(engine) as session:
            assert session.get_one(Subscriber, sent.people[a].id).suppressed == "complained"
            assert session.get_one(Subscriber, sent.people[b].id).suppressed is None
    finally:
        box.server.stop()


def test_a_store_that_fails_answers_451_so_the_mta_keeps_the_report(
    verp_settings: Settings, sent: Sent
) -> None:
    def broken(raw: bytes, rcpts: list[str]) -> Intake:
        raise OSError("disk I/O error")

    paths = ReturnPaths(BOUNCES, [SECRET])
    port = free_port()
    server = BounceServer(BounceHandler(broken, paths), host="127.0.0.1", port=port)
    server.start()
    try:
        email = next(iter(sent.people))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail(
                    "", [sent.return_paths[email]], report_for("exim_dsn.eml", sent, email)
                )
        assert caught.value.smtp_code == 451
    finally:
        server.stop()


def test_complaints_as_they_arrive_pause_a_send_still_going_out(
    session: Session, verp_settings: Settings, draft: int, engine: Engine
) -> None:
    settings = verp_settings.model_copy(
        update={"domain_limits": "example.org=5", "breaker_min_sample": 5}
    )
    newsletter = publish.default_newsletter(session, settings)
    people = [
        Subscriber(email=f"c{i}@example.org", email_key=f"c{i}@example.org") for i in range(9)
    ]
    session.add_all(people)
    session.add(User(email="editor@news.example.com", role="editor"))
    session.flush()
    session.add_all(
        Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0) for p in people
    )
    session.commit()
    # Five go out this minute; four wait for the next one, so the send is still going.
    publish.send_edition(
        session,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend(),
        options=publish.SendOptions(clock=lambda: NOW),
    )
    assert store.get_edition(session, edition_id=draft).status == EditionStatus.sending
    outbox = {m.recipient: m for m in memory.outbox}
    assert len(outbox) == 5
    sent = Sent(
        draft,
        {p.email: p for p in people},
        {e: m.message_id for e, m in outbox.items()},
        {e: m.sender for e, m in outbox.items()},
    )
    memory.reset()
    box = start_listener(engine, settings, lmtp=False)
    try:
        complainer = next(iter(outbox))
        deliver(box, report_for("microsoft_jmrp_abuse.eml", sent, complainer), BOUNCES)
    finally:
        box.server.stop()
    session.expire_all()
    edition = store.get_edition(session, edition_id=draft)
    assert edition.status == EditionStatus.paused
    assert (
        edition.status_reason and "complaints 1/5 = 20.00% (limit 0.30%)" in edition.status_reason
    )
    # The editor was told, through the configured backend.
    assert [m.recipient for m in memory.outbox] == ["editor@news.example.com"]
