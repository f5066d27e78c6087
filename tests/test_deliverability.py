"""Deliverability over real servers: VERP return paths, 5xx answers at send time as bounces,
the reputation breaker, per-domain throttles with back-off, and the warm-up cap.

Sends go through the real SMTP backend to a real aiosmtpd server (``smtp_server``), whose
RCPT replies a test sets per address; the store is a real SQLite file. Every time comes from a
pinned clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import Settings
from newsletter.edition.verp import ReturnPaths
from newsletter.sending import ledger, reputation
from newsletter.sending.domainrate import DomainLimits, WarmupPlan, group_of
from newsletter.storage import store
from newsletter.storage.models import (
    Delivery,
    EditionStatus,
    MailEvent,
    SendWindow,
    Subscriber,
    Subscription,
    User,
)
from tests.conftest import SECRET

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, at: datetime = NOW) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def epoch(self) -> float:
        return self.at.timestamp()


def _person(session: Session, who: Subscriber) -> Subscriber:
    """``who`` as stored now (read again)."""
    found = session.get(Subscriber, who.id)
    assert found is not None
    return found


def subscribe(session: Session, settings: Settings, emails: list[str]) -> list[Subscriber]:
    newsletter = publish.default_newsletter(session, settings)
    people = [Subscriber(email=e, email_key=e.lower()) for e in emails]
    session.add_all(people)
    session.flush()
    session.add_all(
        Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0) for p in people
    )
    session.commit()
    return people


def send(
    session: Session, settings: Settings, draft: int, url: str, clock: Clock
) -> publish.SendReport:
    return publish.send_edition(
        session,
        edition_id=draft,
        settings=settings,
        backend=SMTPBackend.from_url(url),
        options=publish.SendOptions(clock=clock),
    )


# --- VERP ---------------------------------------------------------------------------------------


def test_a_return_path_names_its_delivery_and_cannot_be_forged() -> None:
    paths = ReturnPaths("Bounces@News.Example.com", [SECRET])
    address = paths.for_delivery(7, 123456)
    local, domain = address.split("@")
    assert domain == "news.example.com" and local.startswith("bounces+")
    assert address == address.lower() and all(c.isalnum() or c in "+-" for c in local)
    ref = paths.read(address)
    assert ref is not None and (ref.edition_id, ref.subscriber_id) == (7, 123456)
    # Servers may fold case and add angle brackets; it still reads.
    assert paths.read(f"<{address.upper()}>") == ref
    # Another subscriber's id with this signature, a changed signature, another domain, the
    # bare address and another key's token all read as nothing.
    body, signature = local.rsplit("-", 1)
    assert paths.read(address.replace("-2n9c-", "-2n9d-")) is None
    flipped = signature[:-1] + ("a" if signature[-1] != "a" else "b")
    assert paths.read(f"{body}-{flipped}@{domain}") is None
    assert paths.read(f"{local}@other.example.com") is None
    assert paths.read("bounces@news.example.com") is None
    other = ReturnPaths("bounces@news.example.com", ["another key of the same strength 1234"])
    assert other.read(address) is None
    # A rotated key still reads what the old one signed (bounces in flight).
    rotated = ReturnPaths("bounces@news.example.com", ["new key new key new key new key!!", SECRET])
    assert rotated.read(address) == ref
    assert rotated.for_delivery(7, 123456) != address


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("bounces", "expected an ASCII address"),
        ("bounces+x@example.com", "may not contain '+'"),
        ("bounces@exämple.com", "expected an ASCII address"),
        ("bou nces@example.com", "may not contain"),
    ],
)
def test_a_bad_bounce_address_is_refused_with_the_setting_named(value: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings(bounce_address=value, _env_file=None)
    assert "NEWSLETTER_BOUNCE_ADDRESS" in str(caught.value) and says in str(caught.value)


def test_each_message_goes_out_with_its_own_return_path(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    settings = settings.model_copy(update={"bounce_address": "bounces@news.example.com"})
    people = subscribe(session, settings, ["ann@example.org", "bob@example.net"])
    report = send(session, settings, draft, smtp_server.url, Clock())
    assert report.run.sent == 2
    paths = ReturnPaths(settings.bounce_address, [SECRET])
    senders = {e.rcpt_tos[0]: e.mail_from for e in smtp_server.received}
    for person in people:
        ref = paths.read(senders[person.email])
        assert ref is not None
        assert (ref.edition_id, ref.subscriber_id) == (draft, person.id)
    # The From header stays the newsletter's address: only the envelope changes.
    assert all(b"From: " in e.original_content for e in smtp_server.received)
    assert all(b"bounces+" not in e.original_content for e in smtp_server.received)


# --- 5xx at send time ---------------------------------------------------------------------------


def test_a_permanent_refusal_at_send_time_is_a_hard_bounce(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    gone, full, fine, spam = subscribe(
        session,
        settings,
        ["gone@example.org", "full@example.org", "fine@example.org", "spam@example.org"],
    )
    smtp_server.responses["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
    smtp_server.responses["full@example.org"] = "552 5.2.2 mailbox full"
    smtp_server.responses["spam@example.org"] = (
        "550 5.7.26 Unauthenticated email from news.example.com is not accepted"
    )
    fine.soft_bounces = 2  # two earlier editions bounced softly
    session.commit()
    report = send(session, settings, draft, smtp_server.url, Clock())
    assert (report.run.sent, report.run.failed, report.run.hard_bounced) == (1, 3, 1)
    # Accepted this time: the soft bounces are no longer in a row.
    session.expire_all()
    assert _person(session, fine).soft_bounces == 0
    # Our missing authentication is not the reader's fault: recorded, not held against them.
    session.expire_all()
    assert (_person(session, spam).suppressed, spam.soft_bounces) == (None, 0)
    session.expire_all()
    assert _person(session, gone).suppressed == "bounced"
    # A full mailbox is not the address's fault: it counts, it does not suppress at once.
    assert _person(session, full).suppressed is None
    assert _person(session, full).soft_bounces == 1
    events = session.exec(select(MailEvent).order_by(col(MailEvent.id))).all()
    assert sorted((e.provider, e.kind, e.subscriber_id, e.edition_id) for e in events) == sorted(
        [
            ("smtp", "bounced_hard", gone.id, draft),
            ("smtp", "bounced_soft", full.id, draft),
            ("smtp", "blocked", spam.id, draft),
        ]
    )
    assert all(e.detail and e.detail[:4] in ("550 ", "552 ") for e in events)
    # The next edition does not go to the address that bounced.
    assert gone.id not in {
        s.subscriber_id
        for s in session.exec(select(Subscription).where(Subscription.status == "active"))
    }


# --- the breaker --------------------------------------------------------------------------------


def test_the_breaker_pauses_a_send_whose_bounce_rate_passes_the_limit_and_alerts(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    emails = [f"reader{i:02d}@example.org" for i in range(40)]
    subscribe(session, settings, emails)
    session.add(User(email="ops@news.example.com", role="operator"))
    session.add(User(email="gone-ops@news.example.com", role="operator", disabled=True))
    session.commit()
    # The first 20 (by delivery id) go through; from the 21st on, every address is unknown.
    for email in emails[20:]:
        smtp_server.responses[email] = f"550 5.1.1 <{email}>: no such user"
    settings = settings.model_copy(
        update={
            "batch_size": 10,
            "bounce_rate_limit": 0.1,
            "breaker_min_sample": 20,
            "mail_backend": smtp_server.url,  # where the alert goes
        }
    )
    report = send(session, settings, draft, smtp_server.url, Clock())
    edition = store.get_edition(session, edition_id=draft)
    session.refresh(edition)
    assert edition.status == EditionStatus.paused
    assert edition.status_reason and "reputation breaker" in edition.status_reason
    assert "hard bounces" in edition.status_reason and "limit 10.00%" in edition.status_reason
    assert report.run.trips and report.run.trips[0].edition_id == draft
    # It stopped within the batch that crossed the line: 40 were due, far fewer were tried.
    tried = report.run.sent + report.run.failed
    assert 20 < tried < 40, tried
    counts = ledger.counts(session, edition_id=draft)
    assert counts["pending"] == 40 - tried
    # Operators and editors (not disabled accounts) got one alert saying why and what next.
    alerts = [e for e in smtp_server.received if e.rcpt_tos == ["ops@news.example.com"]]
    assert len(alerts) == 1
    body = alerts[0].original_content.decode()
    assert "Send paused" in body and f"newsletter edition resume {draft}" in body
    assert not [e for e in smtp_server.received if "gone-ops" in e.rcpt_tos[0]]
    # The same reading, from the module operators' tools use.
    reading = reputation.read(session, edition_id=draft)
    assert reading.hard_bounces == report.run.failed and reading.bounce_rate > 0.1
    # Resuming is the operator's decision; a second trip needs the rate to rise again.
    paused = [e for e in store.edition_events(session, edition_id=draft) if e.action == "paused"]
    assert [e.actor for e in paused] == ["reputation breaker"]
    # The operator's view: the reason, and both rates against their limits.
    from typer.testing import CliRunner

    from newsletter.cli import app

    env = {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_BOUNCE_RATE_LIMIT": "0.1",
        "NEWSLETTER_BREAKER_MIN_SAMPLE": "20",
    }
    status = CliRunner().invoke(app, ["edition", "status", str(draft)], env=env)
    assert status.exit_code == 0, status.output
    assert (
        f"edition {draft} " in status.stdout and "reason: paused by the reputation" in status.stdout
    )
    hard = reading.hard_bounces
    assert (
        f"reputation: complaints 0/20 = 0.00% (limit 0.30%), hard bounces {hard}/{tried} = "
        f"{hard / tried:.2%} (limit 10.00%; the breaker reads them from 20 messages)"
    ) in status.stdout
    assert "paused by reputation breaker" in status.stdout
    # The operator resumes: the breaker now judges what goes out after (the same 20 addresses
    # that pushed it over do not pause it again at the next refusal). The last ones all bounce,
    # but fewer than the minimum sample: the send finishes, and nobody is alerted twice.
    publish.resume_edition(session, edition_id=draft)
    rest = send(session, settings, draft, smtp_server.url, Clock())
    assert rest.run.failed == 40 - tried and not rest.run.trips
    assert rest.edition.status == EditionStatus.sent
    assert len([e for e in smtp_server.received if e.rcpt_tos == ["ops@news.example.com"]]) == 1
    assert reputation.read(session, edition_id=draft).attempted == 40 - tried
    assert reputation.read(session, edition_id=draft, since_resume=False).attempted == 40


def test_no_trip_below_the_minimum_sample_or_under_the_limits() -> None:
    limits = reputation.Thresholds(complaint_rate=0.003, bounce_rate=0.05, min_sample=1000)
    small = reputation.Reading(1, attempted=999, accepted=999, hard_bounces=500, complaints=50)
    assert small.over(limits) is None
    fine = reputation.Reading(1, attempted=10_000, accepted=9_900, hard_bounces=499, complaints=29)
    assert fine.over(limits) is None
    complaints = reputation.Reading(
        1, attempted=10_000, accepted=10_000, hard_bounces=0, complaints=31
    )
    reason = complaints.over(limits)
    assert reason == "complaints 31/10000 = 0.31% (limit 0.30%)"
    off = reputation.Thresholds(complaint_rate=0, bounce_rate=0, min_sample=1)
    assert complaints.over(off) is None


# --- per-domain throttles, back-off and warm-up -------------------------------------------------


def test_domain_limits_parse_group_aliases_and_refuse_with_the_entry_named() -> None:
    limits = DomainLimits.parse("gmail.com=600, Yahoo.com=300,*=1000")
    assert limits.limit("gmail.com") == 600 and limits.limit("yahoo.com") == 300
    assert limits.limit("example.org") == 1000
    assert (
        group_of("A@GoogleMail.com") == "gmail.com" and group_of("b@hotmail.com") == "outlook.com"
    )
    assert group_of("c@aol.com") == "yahoo.com" and group_of("d@example.org") == "example.org"
    assert DomainLimits.parse("").empty
    for bad in ("gmail.com", "gmail.com=fast", "gmail.com=0", "not a domain=5"):
        with pytest.raises(ValueError, match="NEWSLETTER_DOMAIN_LIMITS"):
            DomainLimits.parse(bad)
    plan = WarmupPlan.parse("2026-11-25:50,100,500")
    day = datetime(2026, 11, 25).date()
    assert [plan.cap_on(day + timedelta(days=n)) for n in (-1, 0, 1, 2, 3)] == [
        50,
        50,
        100,
        500,
        None,
    ]
    for bad in ("soon:5", "2026-11-25", "2026-11-25:5,x", "2026-11-25:0"):
        with pytest.raises(ValueError, match="NEWSLETTER_WARMUP"):
            WarmupPlan.parse(bad)


def _statuses(session: Session, draft: int) -> dict[str, list[str]]:
    session.expire_all()
    rows = session.exec(
        select(Subscriber.email, Delivery.status, Delivery.attempts)
        .join(Delivery, col(Delivery.subscriber_id) == Subscriber.id)
        .where(Delivery.edition_id == draft)
    ).all()
    out: dict[str, list[str]] = {}
    for email, status, attempts in rows:
        out.setdefault(f"{status}/{attempts}", []).append(email)
    return {k: sorted(v) for k, v in out.items()}


def test_a_domain_at_its_limit_waits_for_the_next_minute_while_others_go_on(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    gmail = [f"g{i}@gmail.com" for i in range(5)]
    others = ["a@example.org", "b@example.net", "c@googlemail.com"]
    subscribe(session, settings, gmail + others)
    settings = settings.model_copy(update={"domain_limits": "gmail.com=3"})
    clock = Clock()
    report = send(session, settings, draft, smtp_server.url, clock)
    # googlemail.com counts as gmail.com: 6 messages to Google, 3 may go this minute.
    to_google = [r for e in smtp_server.received for r in e.rcpt_tos if "mail.com" in r]
    assert len(to_google) == 3
    assert {"a@example.org", "b@example.net"} <= {e.rcpt_tos[0] for e in smtp_server.received}
    assert report.run.held_back == 3 and report.run.sent == 5
    held = session.exec(
        select(Delivery).where(Delivery.edition_id == draft, Delivery.status == "pending")
    ).all()
    # Held back is not an attempt, and it may go when the minute's window ends.
    assert len(held) == 3 and all(d.attempts == 0 for d in held)
    assert all(d.retry_at == NOW + timedelta(minutes=1) for d in held)
    assert all(d.error_text and "gmail.com at its limit of 3/min" in d.error_text for d in held)
    # A second pass in the same minute sends none of them; a minute later all three go.
    again = send(session, settings, draft, smtp_server.url, clock)
    assert again.run.sent == 0
    clock.at = NOW + timedelta(minutes=1)
    last = send(session, settings, draft, smtp_server.url, clock)
    assert last.run.sent == 3 and last.edition.status == EditionStatus.sent
    assert _statuses(session, draft) == {"sent/1": sorted(gmail + others)}


def test_a_domain_that_answers_421_is_held_back_without_slowing_the_others(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    yahoo = [f"y{i}@yahoo.com" for i in range(6)]
    others = [f"o{i}@example.org" for i in range(6)]
    # Interleaved, so Yahoo's answers come while the others are still due.
    subscribe(session, settings, [e for pair in zip(yahoo, others, strict=True) for e in pair])
    smtp_server.responses["y0@yahoo.com"] = (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume"
    )
    settings = settings.model_copy(update={"domain_limits": "*=1000", "batch_size": 4})
    clock = Clock()
    report = send(session, settings, draft, smtp_server.url, clock)
    delivered = sorted(r for e in smtp_server.received for r in e.rcpt_tos)
    # Every other domain went out in full. Yahoo deferred y0; y1 rode in the same chunk (50
    # messages are handed over at once), and from the next chunk on nothing went to Yahoo.
    assert [e for e in delivered if "example.org" in e] == sorted(others)
    assert [e for e in delivered if "yahoo" in e] == ["y1@yahoo.com"]
    assert report.run.deferred == 1 and report.run.held_back == 4
    window = session.get(SendWindow, "d:yahoo.com")
    assert window is not None and window.backoff_step == 1
    assert window.backoff_until == pytest.approx(clock.epoch() + 60)
    # Answering so again doubles the wait; the others were never slowed.
    statuses = _statuses(session, draft)
    assert statuses["deferred/1"] == ["y0@yahoo.com"]
    assert statuses["pending/0"] == sorted(yahoo[2:])
    held = session.exec(
        select(Delivery).where(Delivery.edition_id == draft, Delivery.status == "pending")
    ).all()
    assert {d.retry_at for d in held} == {NOW + timedelta(minutes=1)}
    assert all(d.error_text and "yahoo.com asked us to slow down" in d.error_text for d in held)
    # It answers so again after the minute: the wait doubles.
    clock.at = NOW + timedelta(minutes=1)
    smtp_server.responses["y2@yahoo.com"] = smtp_server.responses["y0@yahoo.com"]
    send(session, settings, draft, smtp_server.url, clock)
    session.expire_all()
    window = session.get(SendWindow, "d:yahoo.com")
    assert window is not None and window.backoff_step == 2
    assert window.backoff_until == pytest.approx(clock.epoch() + 120)
    # Yahoo recovers: after the wait and the deferrals' own retry time, everything goes.
    smtp_server.responses.clear()
    clock.at = NOW + timedelta(hours=2)
    later = send(session, settings, draft, smtp_server.url, clock)
    assert later.edition.status == EditionStatus.sent
    assert sorted(r for e in smtp_server.received for r in e.rcpt_tos if "yahoo" in r) == yahoo


def test_the_warm_up_plan_caps_each_day(
    session: Session, settings: Settings, draft: int, smtp_server: Any
) -> None:
    subscribe(session, settings, [f"w{i}@example.org" for i in range(7)])
    settings = settings.model_copy(update={"warmup": "2026-11-25:3,5"})
    clock = Clock()
    first = send(session, settings, draft, smtp_server.url, clock)
    assert (first.run.sent, first.run.held_back) == (3, 4)
    tomorrow = datetime(2026, 11, 26, tzinfo=UTC)
    held = session.exec(
        select(Delivery).where(Delivery.edition_id == draft, Delivery.status == "pending")
    ).all()
    assert {d.retry_at for d in held} == {tomorrow}
    assert all(d.error_text and "warm-up" in d.error_text for d in held)
    clock.at = tomorrow + timedelta(hours=9)
    second = send(session, settings, draft, smtp_server.url, clock)
    assert (second.run.sent, second.run.held_back) == (4, 0)  # the day's cap is 5


def test_bad_throttle_settings_end_in_one_line(settings: Settings) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    result = CliRunner().invoke(app, ["doctor"], env={"NEWSLETTER_DOMAIN_LIMITS": "gmail.com=lots"})
    assert result.exit_code == 1
    assert result.output == (
        "error: configuration: NEWSLETTER_DOMAIN_LIMITS: 'gmail.com=lots' is not "
        'domain=messages-per-minute (e.g. "gmail.com=600,*=1000")\n'
    )
    result = CliRunner().invoke(
        app, ["stats"], env={"NEWSLETTER_WARMUP": "2026-11-25:0", "NEWSLETTER_FROM": "bad"}
    )
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "NEWSLETTER_WARMUP: after 2026-11-25: expected positive daily caps" in result.output
    assert "NEWSLETTER_FROM: expected \"Name <address>\", got 'bad'" in result.output


@pytest.mark.parametrize(
    ("changes", "emails", "sent", "held"),
    [
        # A hold, then the rate limiter writes its bucket on its own connection.
        (
            {"domain_limits": "gmail.com=1", "rate_limit": "100/s"},
            ["g0@gmail.com", "g1@gmail.com", "a@example.org"],
            2,
            1,
        ),
        # A whole chunk held by the warm-up, then the next chunk is admitted.
        ({"warmup": "2026-11-25:3"}, [f"w{i}@example.org" for i in range(120)], 3, 117),
        # A hold and a 421 in one chunk: the back-off writes on its own connection.
        (
            {"domain_limits": "gmail.com=1", "journal_dir": "off"},
            ["g0@gmail.com", "g1@gmail.com", "y0@yahoo.com", "o0@example.org"],
            2,
            1,
        ),
    ],
    ids=["hold-then-rate-limit", "warm-up-over-several-chunks", "hold-and-421"],
)
def test_held_deliveries_never_lock_the_store_or_stay_claimed(
    session: Session,
    settings: Settings,
    draft: int,
    smtp_server: Any,
    changes: dict[str, str],
    emails: list[str],
    sent: int,
    held: int,
) -> None:
    # On SQLite an uncommitted hold would lock out the gate's, the limiter's and the
    # back-off's own transactions: 30 s of "database is locked", then a crash mid-chunk.
    subscribe(session, settings, emails)
    smtp_server.responses["y0@yahoo.com"] = "421 4.7.0 [TSS04] try again later"
    settings = settings.model_copy(update=changes)
    report = send(session, settings, draft, smtp_server.url, Clock())
    assert (report.run.sent, report.run.held_back) == (sent, held)
    counts = ledger.counts(session, edition_id=draft)
    assert counts["claimed"] == 0
    assert counts["sent"] == sent and counts["pending"] == held
    received = [r for e in smtp_server.received for r in e.rcpt_tos]
    assert len(received) == len(set(received)) == sent


def test_the_bounce_mailbox_password_is_masked_wherever_it_would_be_shown() -> None:
    from newsletter.sending.redaction import redactor_for

    settings = Settings(
        bounce_mailbox="imaps://bounces:p%40ss%2Fword@mail.example.org/INBOX",
        _env_file=None,
    )
    text = "login p@ss/word refused (p%40ss%2Fword)"
    assert redactor_for(settings).scrub(text) == "login *** refused (***)"


def test_senders_on_postgresql_share_a_domains_budget(
    postgres_url: str, settings: Settings, tmp_path: Any
) -> None:
    from newsletter.audience import importing
    from newsletter.backends import memory
    from newsletter.backends.memory import MemoryBackend
    from newsletter.storage.database import make_engine, upgrade
    from tests.conftest import EXAMPLES

    pg = settings.model_copy(
        update={"database_url": postgres_url, "domain_limits": "gmail.com=7", "batch_size": 5}
    )
    engine = make_engine(postgres_url)
    upgrade(engine)
    try:
        with Session(engine, expire_on_commit=False) as session:
            importing.import_comparisons(session, path=EXAMPLES)
            subscribe(session, pg, [f"g{i}@gmail.com" for i in range(40)])
            draft = publish.draft_edition(
                session, settings=pg, newsletter_slug=None, at=NOW
            ).edition.id
            assert draft is not None
            # Four senders, each with its own connection, claim batches of five at once.
            report = publish.send_edition(
                session,
                edition_id=draft,
                settings=pg,
                backend=MemoryBackend,
                options=publish.SendOptions(concurrency=4, clock=Clock()),
            )
            assert report.run.sent == 7 and report.run.held_back == 33
            assert len(memory.outbox) == 7
            window = session.get(SendWindow, "d:gmail.com")
            assert window is not None and window.used == 7
    finally:
        engine.dispose()
