"""``newsletter bounces poll`` over a real Dovecot (IMAP and POP3): reports in the bounce
mailbox act on the deliveries they name and are deleted; what is not a report is deleted too
(an auto-reply), and a message that can't be stored stays for the next poll."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.cli.common import CLI_CLOCK
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.storage.models import MailEvent, Subscriber
from tests.mailserver import MailServer, dovecot_fixture, mail_server_fixture  # noqa: F401
from tests.test_bounce_intake import (  # noqa: F401 (fixtures)
    BOUNCES,
    NOW,
    Sent,
    report_for,
    sent_fixture,
    verp_settings_fixture,
)


def poll(settings: Settings, mailbox: str, *args: str) -> Any:
    env = {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_SECRET_KEY": settings.secret_key,
        "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES,
        "NEWSLETTER_BOUNCE_MAILBOX": mailbox,
        "NEWSLETTER_MAIL_BACKEND": "memory://",
    }
    pinned = CLI_CLOCK.set(fixed_clock(NOW))
    try:
        return CliRunner().invoke(app, ["bounces", "poll", *args], env=env)
    finally:
        CLI_CLOCK.reset(pinned)


@pytest.mark.parametrize("scheme", ["imaps", "pop3"])
def test_poll_takes_the_reports_and_empties_the_mailbox(
    scheme: str, mail_server: MailServer, session: Session, verp_settings: Settings, sent: Sent
) -> None:
    a, b, c = list(sent.people)[:3]
    mail_server.append(
        report_for("postfix_user_unknown.eml", sent, a),
        report_for("yahoo_arf_abuse.eml", sent, b),
        report_for("auto_reply.eml", sent, c),
    )
    result = poll(verp_settings, mail_server.url(scheme))
    assert result.exit_code == 0, result.output
    assert "3 messages, 3 taken and deleted, 0 kept" in result.stdout
    assert "bounced_hard 1" in result.stdout and "complained 1" in result.stdout
    assert "ignored 1" in result.stdout
    assert mail_server.password not in result.output
    session.expire_all()
    assert session.get_one(Subscriber, sent.people[a].id).suppressed == "bounced"
    assert session.get_one(Subscriber, sent.people[b].id).suppressed == "complained"
    assert session.get_one(Subscriber, sent.people[c].id).suppressed is None
    assert mail_server.messages() == []
    # The same report arriving again (a copy in the mailbox) changes nothing.
    mail_server.append(report_for("postfix_user_unknown.eml", sent, a))
    again = poll(verp_settings, mail_server.url(scheme))
    assert "1 messages, 1 taken and deleted" in again.stdout and "duplicate 1" in again.stdout
    assert len(session.exec(select(MailEvent)).all()) == 2


def test_poll_mistakes_end_in_one_line(
    mail_server: MailServer, verp_settings: Settings, sent: Sent
) -> None:
    wrong = poll(verp_settings, mail_server.url("imap", password="not-the-password"))
    assert wrong.exit_code == 1 and len(wrong.output.splitlines()) == 1
    assert "login refused" in wrong.output and "not-the-password" not in wrong.output
    unset = poll(verp_settings, "")
    assert unset.exit_code == 1
    assert unset.output.startswith("error: NEWSLETTER_BOUNCE_MAILBOX is not set")
    bad = poll(verp_settings, "ftp://x@host/")
    assert bad.exit_code == 1 and "mailbox URL: " in bad.output and "scheme" in bad.output


def test_doctor_checks_the_return_path_and_logs_in_to_the_mailbox(
    mail_server: MailServer, verp_settings: Settings
) -> None:
    from newsletter.doctor.bounce_checks import check_bounces

    unset = check_bounces(
        verp_settings.model_copy(update={"bounce_address": "", "mail_backend": "smtp://mx:25"}), 2
    )
    assert [(c.ok, c.summary.split(":")[0]) for c in unset] == [
        (None, "smtp")  # smtp:// sends use the From address as return path: ...
    ]
    good = check_bounces(
        verp_settings.model_copy(update={"bounce_mailbox": mail_server.url("imaps")}), 5
    )
    assert [c.ok for c in good] == [True, True]
    assert good[1].summary.endswith("/INBOX logs in") and mail_server.password not in str(good)
    bad = check_bounces(
        verp_settings.model_copy(
            update={"bounce_mailbox": mail_server.url("pop3", password="wrong-one")}
        ),
        5,
    )
    assert bad[-1].ok is False and "login refused" in bad[-1].summary
    assert "wrong-one" not in bad[-1].summary


def test_the_scheduler_reads_the_mailbox_and_survives_a_bad_one(
    mail_server: MailServer,
    session: Session,
    engine: Any,
    verp_settings: Settings,
    sent: Sent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from newsletter.service import runner

    a = next(iter(sent.people))
    mail_server.append(report_for("gmail_user_unknown.eml", sent, a))
    good = verp_settings.model_copy(update={"bounce_mailbox": mail_server.url("imap")})
    jobs = runner.build_scheduler(good, engine, send=True, blocking=False)
    assert jobs.get_job("bounces") is not None  # every BOUNCE_POLL_SECONDS
    result = runner.poll_bounces(good, engine)
    assert result is not None and (result.seen, result.handled) == (1, 1)
    session.expire_all()
    assert session.get_one(Subscriber, sent.people[a].id).suppressed == "bounced"
    bad = good.model_copy(update={"bounce_mailbox": mail_server.url("imap", password="nope!")})
    with caplog.at_level("WARNING", logger="newsletter.service.runner"):
        assert runner.poll_bounces(bad, engine) is None
    assert "bounce mailbox: imap://" in caplog.text and "login refused" in caplog.text
    assert "nope!" not in caplog.text
    # Without a mailbox (or without sending) there is no such job.
    assert (
        runner.build_scheduler(verp_settings, engine, send=True, blocking=False).get_job("bounces")
        is None
    )
