"""Bounce and complaint reports read from mail (newsletter.feedback.bounce_reports).

The samples in tests/fixtures/bounces are shaped like what each provider sends and use fixed
values (failed recipient, original Message-ID, VERP return path) that other tests may swap with
str.replace.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from newsletter.feedback.bounce_reports import (
    DIAGNOSTIC_MAX,
    BounceReport,
    NotAReport,
    classify,
    classify_reply,
    parse,
)
from newsletter.webhooks.base import EventKind

SAMPLES = Path(__file__).parent / "fixtures" / "bounces"
RECIPIENT = "reader@example.net"
ORIGINAL_ID = "<nl.7.3.0123456789@example.com>"
RETURN_PATH = "bounces+7-3-abcdefghijklmnop@example.com"

HARD = EventKind.bounced_hard
SOFT = EventKind.bounced_soft
BLOCKED = EventKind.blocked
COMPLAINED = EventKind.complained

# sample -> (kind, recipient, status, reporter) of its one report, or None for "no report".
EXPECTED: dict[str, tuple[EventKind, str | None, str, str] | None] = {
    "gmail_user_unknown": (HARD, RECIPIENT, "5.1.1", "googlemail.com"),
    "gmail_mailbox_full": (SOFT, RECIPIENT, "5.2.2", "googlemail.com"),
    "yahoo_user_unknown": (HARD, RECIPIENT, "5.0.0", "sonic301-21.consmr.mail.ne1.yahoo.com"),
    "microsoft_recipient_not_found": (
        HARD,
        RECIPIENT,
        "5.1.10",
        "AM9P195MB1234.EURP195.PROD.OUTLOOK.COM",
    ),
    "postfix_user_unknown": (HARD, RECIPIENT, "5.1.1", "mail.example.com"),
    "postfix_two_recipients": (HARD, RECIPIENT, "5.1.1", "mail.example.com"),
    # Exim's DSN says 5.0.0; the diagnostic's 550 5.1.1 refines it.
    "exim_dsn": (HARD, RECIPIENT, "5.1.1", "mail.example.org"),
    "exim_plain": (HARD, RECIPIENT, "5.1.1", "Mailer-Daemon@mail.example.org"),
    "qmail_plain": (HARD, RECIPIENT, "5.1.1", "MAILER-DAEMON@mail.example.org"),
    "policy_block": (BLOCKED, RECIPIENT, "5.7.1", "mail.example.org"),
    "yahoo_arf_abuse": (COMPLAINED, RECIPIENT, "", "Yahoo!-Mail-Feedback/2.0"),
    "microsoft_jmrp_abuse": (COMPLAINED, RECIPIENT, "", "Microsoft JMRP/1.0"),
    "postfix_delayed": None,
    "exim_warning": None,
    "arf_not_spam": None,
    "auto_reply": None,
}


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.eml").read_bytes()


def only(data: bytes) -> BounceReport:
    reports = parse(data)
    assert len(reports) == 1, reports
    return reports[0]


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.stem for p in SAMPLES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name: str) -> None:
    expected = EXPECTED[name]
    reports = parse(sample(name))
    if expected is None:
        assert reports == []
        return
    kind, recipient, status, reporter = expected
    assert len(reports) == 1, reports
    report = reports[0]
    assert report.kind is kind
    assert report.recipient == recipient
    assert report.status == status
    assert report.reporter == reporter
    assert report.original_message_id == ORIGINAL_ID
    assert RETURN_PATH in report.addresses
    assert len({a.lower() for a in report.addresses}) == len(report.addresses)
    assert report.occurred_at is not None and report.occurred_at.utcoffset() is not None
    assert report.diagnostic and "\n" not in report.diagnostic
    assert len(report.diagnostic) <= DIAGNOSTIC_MAX
    assert report.report_id.endswith(f"|{recipient}")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("gmail_user_unknown", "550 5.1.1 The email account that you tried to reach does not"),
        ("microsoft_recipient_not_found", "RESOLVER.ADR.RecipientNotFound"),
        ("yahoo_user_unknown", "doesn't have a yahoo.com account"),
        ("exim_plain", "Recipient address rejected: User unknown in local recipient table"),
        ("yahoo_arf_abuse", "abuse"),
    ],
)
def test_diagnostic_is_the_reason_in_one_line(name: str, words: str) -> None:
    diagnostic = only(sample(name)).diagnostic
    assert words in diagnostic
    assert "550-5.1.1" not in diagnostic  # Gmail's continuation prefixes are folded away
    assert not diagnostic.lower().startswith("smtp;")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_crlf_line_ends_read_the_same(name: str) -> None:
    def fields(data: bytes) -> list[tuple[object, ...]]:
        return [
            (r.kind, r.recipient, r.status, r.diagnostic, r.original_message_id, r.addresses)
            for r in parse(data)
        ]

    data = sample(name)
    assert b"\r\n" not in data
    assert fields(data.replace(b"\n", b"\r\n")) == fields(data)


def test_global_delivery_status_is_read_like_delivery_status() -> None:
    data = (
        sample("postfix_two_recipients")
        .replace(
            b"Content-Type: message/delivery-status",
            b"Content-Type: message/global-delivery-status",
        )
        .replace(b"Action: delayed\nStatus: 4.4.1", b"Action: failed\nStatus: 5.2.2")
    )
    reports = parse(data)
    assert [(r.kind, r.recipient, r.status) for r in reports] == [
        (HARD, RECIPIENT, "5.1.1"),
        (SOFT, "editor@example.org", "5.2.2"),
    ]


def test_occurred_at_is_the_arrival_date_or_the_date_header() -> None:
    gmail = only(sample("gmail_user_unknown")).occurred_at  # Arrival-Date, -0700
    exim = only(sample("exim_dsn")).occurred_at  # no Arrival-Date: the report's Date
    yahoo_arf = only(sample("yahoo_arf_abuse")).occurred_at  # ARF Received-Date
    qmail = only(sample("qmail_plain")).occurred_at  # Date with -0000: taken as UTC
    assert gmail is not None and gmail.isoformat() == "2024-05-14T16:12:43+00:00"
    assert exim is not None and exim.isoformat() == "2024-05-14T17:20:12+00:00"
    assert yahoo_arf is not None and yahoo_arf.isoformat() == "2024-05-14T16:51:01+00:00"
    assert qmail is not None and qmail.isoformat() == "2024-05-14T17:40:02+00:00"


# --- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action", "diagnostic", "kind"),
    [
        ("5.1.1", "failed", "", HARD),
        ("5.1.2", "failed", "", HARD),
        ("5.1.3", "failed", "", HARD),
        ("5.1.6", "failed", "", HARD),
        ("5.1.10", "failed", "", HARD),
        ("5.2.1", "failed", "The email account that you tried to reach is disabled", HARD),
        ("5.2.2", "failed", "mailbox full", SOFT),
        ("5.7.1", "failed", "Message rejected as spam", BLOCKED),
        ("5.7.1", "failed", "550 5.7.1 user unknown", BLOCKED),  # a policy code wins
        ("5.7.26", "failed", "Unauthenticated email from example.com is not accepted", BLOCKED),
        ("5.1.8", "failed", "<bounces+x@example.com>: Sender address rejected", BLOCKED),
        ("5.1.7", "failed", "bad sender mailbox syntax", BLOCKED),
        ("5.2.2", "failed", "mailbox full", SOFT),
        ("5.4.4", "failed", "Unable to route", SOFT),
        ("5.3.0", "failed", "", BLOCKED),
        ("5.4.4", "failed", "unable to route", SOFT),
        ("5.0.0", "failed", "smtp; 550 No such user here", HARD),
        (
            "5.0.0",
            "failed",
            "554 delivery error: dd This user doesn't have a yahoo.com account",
            HARD,
        ),
        ("5.0.0", "failed", "smtp; 554 Transaction failed", SOFT),
        ("5.0.0", "failed", "smtp; 550 5.1.1 <a@b.example>: bad", HARD),  # refined to 5.1.1
        ("5.0.0", "failed", "smtp; 550 5.7.1 blocked", BLOCKED),  # refined to 5.7.1
        ("5.0.0", "failed", "Sender address rejected: Domain not found", BLOCKED),
        ("5.1.0", "failed", "Sender address rejected: Domain not found", BLOCKED),
        ("5.5.0", "failed", "Requested action not taken: mailbox unavailable", HARD),
        ("5.5.0", "failed", "Syntax error in parameters", SOFT),
        ("", "failed", "smtp; 550 5.1.1 user unknown", HARD),
        ("", "failed", "smtp; 552 5.2.2 over quota", SOFT),
        ("", "failed", "550 Recipient not found", HARD),
        ("", "failed", "550 RecipientNotFound", HARD),
        ("", "failed", "smtp; 550 Message refused", SOFT),
        ("", "failed", "Invalid recipient", HARD),
        ("", "failed", "", SOFT),
        ("4.4.7", "failed", "delivery time expired", SOFT),
        ("4.2.2", "failed", "", SOFT),
        ("4.4.1", "delayed", "connection timed out", None),
        ("5.1.1", "delayed", "", None),
        ("2.0.0", "delivered", "", None),
        ("2.0.0", "relayed", "", None),
        ("2.0.0", "expanded", "", None),
        ("2.0.0", "failed", "", None),
        ("5.1.1 (bad destination mailbox address)", "Failed", "", HARD),
    ],
)
def test_classify(status: str, action: str, diagnostic: str, kind: EventKind | None) -> None:
    assert classify(status, action, diagnostic) == kind


def test_classify_defaults_to_failed() -> None:
    assert classify("5.1.1") == HARD
    assert classify("4.2.2") == SOFT


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.1.1 <reader@example.net>: Recipient address rejected: User unknown", HARD),
        (550, "Requested action not taken: mailbox unavailable", HARD),
        (550, "5.2.1 The email account that you tried to reach is disabled.", HARD),
        (552, "5.2.2 The recipient's inbox is out of storage space.", SOFT),
        (554, "5.7.1 Service unavailable; Client host [198.51.100.10] blocked", BLOCKED),
        (
            550,
            "5.1.8 <bounces+7-3-x@example.com>: Sender address rejected: Domain not found",
            BLOCKED,
        ),
        (550, "Message rejected", SOFT),
        (450, "4.2.0 <reader@example.net>: Recipient address rejected: Greylisted", None),
        (421, "4.7.0 Try again later, closing connection.", None),
        (451, "user unknown", None),
        (250, "2.0.0 OK", None),
    ],
)
def test_classify_reply(code: int, text: str, kind: EventKind | None) -> None:
    assert classify_reply(code, text) == kind


# --- ids and addresses --------------------------------------------------------------------------


def test_report_id_is_stable_across_parses() -> None:
    data = sample("postfix_user_unknown")
    first, second = only(data), only(data)
    assert first.report_id == second.report_id == "<4VfBT20m1Kz9tJ3@mail.example.com>|" + RECIPIENT
    assert first == second


def test_report_id_differs_per_recipient() -> None:
    data = sample("postfix_two_recipients").replace(
        b"Action: delayed\nStatus: 4.4.1", b"Action: failed\nStatus: 5.1.1"
    )
    reports = parse(data)
    assert [r.recipient for r in reports] == [RECIPIENT, "editor@example.org"]
    assert reports[0].report_id != reports[1].report_id
    assert len({r.report_id.partition("|")[0] for r in reports}) == 1


def test_a_dsn_without_message_id_gets_a_hash_id() -> None:
    data = sample("postfix_user_unknown").replace(
        b"Message-Id: <4VfBT20m1Kz9tJ3@mail.example.com>\n", b""
    )
    assert b"Message-Id" not in data
    report = only(data)
    assert report.report_id == hashlib.sha256(data).hexdigest() + "|" + RECIPIENT
    other = only(data.replace(b"18:51:02 +0200", b"18:51:03 +0200"))
    assert other.report_id != report.report_id


def test_delivered_to_on_the_report_is_an_address() -> None:
    other = "bounces+9-4-qrstuvwxyzabcdef@example.com"
    data = f"Delivered-To: {other}\n".encode() + sample("exim_dsn")
    addresses = only(data).addresses
    assert addresses[0] == other
    assert RETURN_PATH in addresses


def test_addresses_come_from_the_envelope_headers_and_the_original() -> None:
    # Only the returned original's Return-Path names the VERP address here.
    data = sample("postfix_user_unknown")
    for header in (b"X-Original-To: ", b"Delivered-To: ", b"To: ", b"X-Postfix-Sender: rfc822; "):
        data = data.replace(header + RETURN_PATH.encode(), header + b"bounces@example.com")
    assert only(data).addresses == ("bounces@example.com", RETURN_PATH)
    # ARF: Original-Mail-From alone is enough.
    arf = sample("yahoo_arf_abuse").replace(
        b"Return-Path: <" + RETURN_PATH.encode() + b">\nReceived: from 198.51.100.10",
        b"Received: from 198.51.100.10",
    )
    assert arf.count(RETURN_PATH.encode()) == 1
    assert RETURN_PATH in only(arf).addresses


def test_jmrp_recipient_is_none_when_only_the_redacted_to_is_left() -> None:
    data = sample("microsoft_jmrp_abuse").replace(
        b"X-HmXmrOriginalRecipient: <reader@example.net>\n", b""
    )
    report = only(data)
    assert report.kind is COMPLAINED
    assert report.recipient is None
    assert report.report_id.endswith("|")


def test_arf_recipient_falls_back_to_the_original_to() -> None:
    data = sample("yahoo_arf_abuse").replace(b"Original-Rcpt-To: reader@example.net\n", b"")
    assert only(data).recipient == RECIPIENT


@pytest.mark.parametrize("feedback_type", [b"fraud", b"Abuse"])
def test_fraud_is_a_complaint_too(feedback_type: bytes) -> None:
    data = sample("arf_not_spam").replace(
        b"Feedback-Type: not-spam", b"Feedback-Type: " + feedback_type
    )
    report = only(data)
    assert report.kind is COMPLAINED
    assert report.recipient == RECIPIENT
    assert report.reporter == "ExampleNetFBL/3.1"


@pytest.mark.parametrize("feedback_type", [b"virus", b"auth-failure", b"other", b""])
def test_other_feedback_types_are_not_reports(feedback_type: bytes) -> None:
    data = sample("yahoo_arf_abuse").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: " + feedback_type
    )
    assert parse(data) == []


@pytest.mark.parametrize("action", [b"delayed", b"delivered", b"relayed", b"expanded"])
def test_recipients_that_did_not_fail_are_skipped(action: bytes) -> None:
    data = sample("postfix_user_unknown").replace(b"Action: failed", b"Action: " + action)
    assert parse(data) == []


# --- hostile and broken input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" \r\n\r\n\t",
        random.Random(3464).randbytes(4096),
        bytes(range(256)) * 16,
        b"\x00\x01\x02PK\x03\x04" + bytes(200),
        b"Subject: " + random.Random(5965).randbytes(4096),  # a header-like start, then binary
    ],
)
def test_not_a_message(data: bytes) -> None:
    with pytest.raises(NotAReport):
        parse(data)


def test_a_plain_mail_is_no_report() -> None:
    assert parse(b"From: a@example.org\nTo: b@example.org\nSubject: hi\n\nhello\n") == []


def test_a_long_injected_diagnostic_is_cut_to_one_line() -> None:
    evil = (
        "Diagnostic-Code: smtp; 550 5.1.1 "
        + "x" * 3000
        + "\n Bcc: victim@example.org\r\n Subject: injected\n\t"
        + "y\x00\x07\x1b[31m" * 500
    )
    data = sample("postfix_user_unknown").decode()
    start = data.index("Diagnostic-Code:")
    end = data.index("\n\n", start)
    report = only((data[:start] + evil + data[end:]).encode())
    assert report.kind is HARD
    assert len(report.diagnostic) <= DIAGNOSTIC_MAX
    assert report.diagnostic.startswith("550 5.1.1 xxx")
    assert not any(c in report.diagnostic for c in "\r\n\t\x00\x07\x1b")


def test_non_utf8_bytes_come_out_as_text() -> None:
    data = sample("postfix_user_unknown").replace(
        b"rejected: User unknown in virtual mailbox table", b"rejected: Benutzer \xfcnbekannt \xff"
    )
    assert b"\xfc" in data
    report = only(data)
    report.diagnostic.encode("utf-8")  # no lone surrogates from undecodable bytes
    assert "Benutzer \ufffdnbekannt \ufffd" in report.diagnostic


def test_deeply_nested_parts_give_no_report() -> None:
    data = b"From: a@example.org\nContent-Type: message/rfc822\n\n" * 5000
    assert parse(data) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_truncated_and_mangled_samples_never_raise(name: str) -> None:
    data = sample(name)
    rng = random.Random(name)
    variants = [data[:cut] for cut in range(40, len(data), max(len(data) // 25, 1))]
    for _ in range(25):
        mangled = bytearray(data)
        for _ in range(20):
            mangled[rng.randrange(len(mangled))] = rng.choice(b'\n\r:;<>@ -="\xff')
        variants.append(bytes(mangled))
    for variant in variants:
        try:
            reports = parse(variant)
        except NotAReport:
            continue
        for report in reports:
            assert report.kind in (HARD, SOFT, BLOCKED, COMPLAINED)
            assert len(report.diagnostic) <= DIAGNOSTIC_MAX and "\n" not in report.diagnostic
            assert report.occurred_at is None or report.occurred_at.utcoffset() is not None
            assert report.recipient is None or "@" in report.recipient
