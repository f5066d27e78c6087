"""newsletter.feedback.mailbox against a real Dovecot (tests/mailserver.py starts a private one): IMAP,
IMAPS, IMAP STARTTLS, POP3, POP3S and POP3 STARTTLS, certificates verified with the test CA."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from newsletter.feedback.mailbox import MailboxError, MailboxURL, PollResult, poll
from tests.mailserver import MailServer, dovecot_fixture, mail_server_fixture  # noqa: F401

TRANSPORTS = [
    pytest.param("imap", False, id="imap"),
    pytest.param("imaps", False, id="imaps"),
    pytest.param("imap", True, id="imap-starttls"),
    pytest.param("pop3", False, id="pop3"),
    pytest.param("pop3s", False, id="pop3s"),
    pytest.param("pop3", True, id="pop3-starttls"),
]


def message(n: int, extra: bytes = b"") -> bytes:
    """A bounce-like message with CRLF line ends (what IMAP and POP3 hand back byte for byte)."""
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\n"
        b"To: bounces+7-3-abcdefghijklmnop@news.example.com\r\n"
        + f"Subject: Undelivered Mail Returned to Sender {n}\r\n".encode()
        + f"Message-ID: <bounce-{n}@mx.example.net>\r\n".encode()
        + b"\r\n"
        + f"This is bounce {n}.\r\n".encode()
        + extra
    )


@dataclass
class Recorder:
    """A handler: records what it got; answers from ``answers`` by position (True when
    absent); an Exception instance there is raised instead."""

    answers: dict[int, bool | BaseException]
    got: list[bytes]

    def __call__(self, raw: bytes) -> bool:
        self.got.append(raw)
        answer = self.answers.get(len(self.got), True)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def recorder(**answers: bool | BaseException) -> Recorder:
    """``recorder(m2=False, m3=ValueError())``: the 2nd message refused, the 3rd raises."""
    return Recorder({int(k[1:]): v for k, v in answers.items()}, [])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- polling over every transport ------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "starttls"), TRANSPORTS)
def test_handled_messages_are_deleted_and_the_others_kept(
    mail_server: MailServer, scheme: str, starttls: bool
) -> None:
    sent = [message(n) for n in range(1, 5)]
    mail_server.append(*sent)
    handler = recorder(m2=False, m3=ValueError("no VERP token\nsecond line"))

    result = poll(mail_server.url(scheme, starttls=starttls), handler, timeout=10)

    assert handler.got == sent  # oldest first, the exact bytes
    assert (result.seen, result.handled, result.kept) == (4, 2, 2)
    assert len(result.errors) == 2
    assert "returned False" in result.errors[0]
    assert "ValueError: no VERP token second line" in result.errors[1]
    assert all("\n" not in line for line in result.errors)
    assert mail_server.messages() == [sent[1], sent[2]]

    # The next poll finds only the kept messages; taking them empties the mailbox.
    again = recorder()
    second = poll(mail_server.url(scheme, starttls=starttls), again, timeout=10)
    assert again.got == [sent[1], sent[2]]
    assert second == PollResult(seen=2, handled=2, kept=0, errors=())
    assert mail_server.messages() == []


@pytest.mark.parametrize(("scheme", "starttls"), TRANSPORTS)
def test_the_handler_gets_the_exact_bytes(
    mail_server: MailServer, scheme: str, starttls: bool
) -> None:
    # A line starting with a dot (POP3 byte-stuffs it), a line far over poplib's 2048-byte
    # limit (HTML quoted in a bounce), 8-bit text, and a blank last line.
    tricky = message(
        1,
        b".a line starting with a dot\r\n..two dots\r\n.\r\n"
        + b"<p>"
        + b"x" * 5000
        + b"</p>\r\n"
        + "Zustellung fehlgeschlagen: Empfänger unbekannt\r\n".encode()
        + b"\r\n",
    )
    mail_server.append(tricky)
    handler = recorder()

    result = poll(mail_server.url(scheme, starttls=starttls), handler, timeout=10)

    assert handler.got == [tricky]
    assert (result.seen, result.handled, result.kept) == (1, 1, 0)
    assert mail_server.messages() == []


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_limit_reads_the_oldest_messages_only(mail_server: MailServer, scheme: str) -> None:
    sent = [message(n) for n in range(1, 4)]
    mail_server.append(*sent)
    handler = recorder()

    result = poll(mail_server.url(scheme), handler, limit=2)

    assert handler.got == sent[:2]
    assert (result.seen, result.handled, result.kept) == (2, 2, 0)
    assert mail_server.messages() == [sent[2]]

    nothing = poll(mail_server.url(scheme), handler, limit=0)
    assert nothing == PollResult(0, 0, 0, ())
    assert mail_server.messages() == [sent[2]]


@pytest.mark.parametrize("scheme", ["imap", "imaps", "pop3", "pop3s"])
def test_an_empty_mailbox(mail_server: MailServer, scheme: str) -> None:
    handler = recorder()
    assert poll(mail_server.url(scheme), handler) == PollResult(0, 0, 0, ())
    assert handler.got == []


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_only_the_first_five_error_lines_are_kept(mail_server: MailServer, scheme: str) -> None:
    mail_server.append(*(message(n) for n in range(1, 8)))

    result = poll(mail_server.url(scheme), lambda raw: False)

    assert (result.seen, result.handled, result.kept) == (7, 0, 7)
    assert len(result.errors) == 5
    assert len(mail_server.messages()) == 7


def test_imap_reads_without_marking_seen(mail_server: MailServer) -> None:
    mail_server.append(message(1), message(2))

    poll(mail_server.url("imap"), recorder(m1=False, m2=RuntimeError("db down")))

    assert [r"\Seen" in flags for flags in mail_server.flags()] == [False, False]


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_deletions_are_committed_when_the_handler_aborts_the_poll(
    mail_server: MailServer, scheme: str
) -> None:
    """A BaseException (Ctrl-C, SystemExit) stops the poll, but what was handled is deleted."""

    class Stop(BaseException):
        pass

    sent = [message(n) for n in range(1, 4)]
    mail_server.append(*sent)

    with pytest.raises(Stop):
        poll(mail_server.url(scheme), recorder(m2=Stop()))

    assert mail_server.messages() == sent[1:]


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_messages_another_poller_deleted_meanwhile_are_skipped(
    mail_server: MailServer, scheme: str
) -> None:
    sent = [message(n) for n in range(1, 4)]
    mail_server.append(*sent)
    got: list[bytes] = []

    def handler(raw: bytes) -> bool:
        got.append(raw)
        if raw == sent[0]:  # meanwhile, another poller takes the second message
            mail_server.mark_deleted(sent[1], expunge=True)
        return True

    result = poll(mail_server.url(scheme), handler)

    assert got == [sent[0], sent[2]]
    assert result == PollResult(seen=2, handled=2, kept=0, errors=())
    assert mail_server.messages() == []


def test_imap_expunges_what_a_stopped_poll_left_flagged(mail_server: MailServer) -> None:
    """A message flagged \\Deleted (handled by a poll that died before its expunge) is removed
    without being handled twice."""
    sent = [message(n) for n in range(1, 3)]
    mail_server.append(*sent)
    mail_server.mark_deleted(sent[0])
    handler = recorder()

    result = poll(mail_server.url("imap"), handler)

    assert handler.got == [sent[1]]
    assert (result.seen, result.handled) == (1, 1)
    assert mail_server.messages() == []


@pytest.mark.parametrize("uidplus", [True, False], ids=["uidplus", "without-uidplus"])
def test_imap_expunge_with_and_without_uidplus(mail_server: MailServer, uidplus: bool) -> None:
    """With UIDPLUS exactly the handled UIDs are expunged; the ``legacy`` user's server offers
    no UIDPLUS, so a plain EXPUNGE commits, taking along whatever else is flagged \\Deleted
    (here a message another client deleted while the poll ran)."""
    user = mail_server.user if uidplus else mail_server.legacy_user
    sent = [message(n) for n in range(1, 4)]
    mail_server.append(*sent, user=user)
    other = message(99)

    def handler(raw: bytes) -> bool:
        if raw == sent[0]:
            mail_server.append(other, user=user)
            mail_server.mark_deleted(other, user=user)
        return raw != sent[1]

    result = poll(mail_server.url("imaps", user=user), handler)

    assert (result.seen, result.handled, result.kept) == (3, 2, 1)
    left = [sent[1], other] if uidplus else [sent[1]]
    assert mail_server.messages(user=user) == left


def test_imap_folder_other_than_inbox(mail_server: MailServer) -> None:
    # "Rück & läufer" in modified UTF-7, written out independently of the code under test.
    wire_name = "R&APw-ck &- l&AOQ-ufer"
    mail_server.create_folder(wire_name)
    mail_server.append(message(1), folder=wire_name)
    mail_server.append(message(2))
    handler = recorder()

    result = poll(mail_server.url("imap", folder="Rück & läufer"), handler)

    assert handler.got == [message(1)]
    assert result.handled == 1
    assert mail_server.messages(folder=wire_name) == []
    assert mail_server.messages() == [message(2)]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["imap", "imaps", "pop3", "pop3s"])
def test_wrong_password_is_one_line_without_the_password(
    mail_server: MailServer, scheme: str
) -> None:
    wrong = "Wr0ng-but-secret-pw"
    mail_server.append(message(1))

    with pytest.raises(MailboxError) as caught:
        poll(mail_server.url(scheme, password=wrong), recorder())

    text = str(caught.value)
    port = mail_server.port(scheme)
    folder = "/INBOX" if scheme.startswith("imap") else ""
    assert text.startswith(f"{scheme}://bounces@127.0.0.1:{port}{folder}: login refused")
    assert "Authentication failed" in text
    assert wrong not in text and mail_server.password not in text
    assert quote(wrong) not in text
    assert "Traceback" not in text and "\n" not in text
    assert mail_server.messages() == [message(1)]


@pytest.mark.parametrize("scheme", ["imap", "imaps", "pop3", "pop3s"])
def test_a_closed_port_is_a_mailbox_error(mail_server: MailServer, scheme: str) -> None:
    port = closed_port()
    with pytest.raises(MailboxError, match=r"^\S+:\d+\S*: can't connect: Connection refused$"):
        poll(mail_server.url(scheme, port=port), recorder(), timeout=5)


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
def test_the_certificate_is_verified(mail_server: MailServer, scheme: str) -> None:
    """Without ?cafile= the system's CAs don't trust the test server's self-signed cert."""
    url = mail_server.url(scheme).split("?")[0]
    with pytest.raises(MailboxError, match="can't connect: TLS certificate not trusted"):
        poll(url, recorder())


def test_starttls_verifies_the_certificate_too(mail_server: MailServer) -> None:
    url = mail_server.url("imap", starttls=True).split("&")[0]  # no cafile
    with pytest.raises(MailboxError, match="STARTTLS failed: TLS certificate not trusted"):
        poll(url, recorder())


def test_a_missing_folder_is_a_mailbox_error(mail_server: MailServer) -> None:
    with pytest.raises(MailboxError, match=r"/Nowhere: can't open the folder: .*exist"):
        poll(mail_server.url("imap", folder="Nowhere"), recorder())


def test_a_missing_cafile_is_named(mail_server: MailServer) -> None:
    url = mail_server.url("imaps").split("?")[0] + "?cafile=/nonexistent/ca.pem"
    with pytest.raises(MailboxError, match="can't read the CA file /nonexistent/ca.pem"):
        poll(url, recorder())


# --- URLs --------------------------------------------------------------------------------------

SECRET = "Hunter2-very-secret"


def test_parse_decodes_and_defaults() -> None:
    box = MailboxURL.parse("imaps://bounces%40example.com:p%40ss%3Aw%2Fd@Mail.Example.com")
    assert box == MailboxURL(
        scheme="imaps",
        host="mail.example.com",
        port=993,
        user="bounces@example.com",
        password="p@ss:w/d",
        folder="INBOX",
        starttls=False,
        cafile=None,
    )
    assert box.describe() == "imaps://bounces@example.com@mail.example.com:993/INBOX"

    assert MailboxURL.parse("imap://u:p@h").port == 143
    assert MailboxURL.parse("pop3://u:p@h").port == 110
    pop = MailboxURL.parse("pop3s://u:p@h")
    assert (pop.port, pop.folder) == (995, "")
    assert pop.describe() == "pop3s://u@h:995"

    tls = MailboxURL.parse("imap://u:p@h:1143/Bounces%20Box?starttls=1&cafile=/etc/ca.pem")
    assert (tls.port, tls.folder, tls.starttls, tls.cafile) == (
        1143,
        "Bounces Box",
        True,
        "/etc/ca.pem",
    )
    assert tls.describe() == "imap://u@h:1143/Bounces Box?starttls=1"


def test_repr_and_describe_have_no_password() -> None:
    box = MailboxURL.parse(f"imaps://bounces:{SECRET}@mail.example.com/INBOX")
    assert box.password == SECRET
    assert SECRET not in repr(box)
    assert SECRET not in str(box)
    assert box.describe() == "imaps://bounces@mail.example.com:993/INBOX"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        (f"http://bounces:{SECRET}@mail.example.com", "scheme"),
        (f"bounces:{SECRET}@mail.example.com", "scheme"),
        (f"imaps://bounces:{SECRET}@", "host"),
        (f"imaps://bounces:{SECRET}@[::1/INBOX", "parse"),
        (f"imaps://bounces:{SECRET}@mail.example.com:99999", "port"),
        (f"imaps://bounces:{SECRET}@mail.example.com:0", "port"),
        (f"imaps://bounces:{SECRET}@mail.example.com:imap", "port"),
        # Unencoded ':', '/', '?' and '#' in the password split the URL elsewhere.
        (f"imaps://bounces:{SECRET}/x@mail.example.com", "before the host"),
        (f"imaps://bounces:{SECRET}?x@mail.example.com", "before the host"),
        (f"imaps://bounces:{SECRET}#x@mail.example.com", "before the host"),
        (f"imaps://bounces:{SECRET}@mail.example.com/INBOX#{SECRET}", "'#'"),
        (f"imaps://:{SECRET}@mail.example.com", "user"),
        ("imaps://bounces@mail.example.com", "password"),
        (f"imaps://{SECRET}@mail.example.com", "password"),
        ("imaps://mail.example.com/INBOX", "user"),
        (f"pop3s://bounces:{SECRET}@mail.example.com/INBOX", "folder"),
        (f"imaps://bounces:{SECRET}@mail.example.com?starttls=1", "starttls"),
        (f"imap://bounces:{SECRET}@mail.example.com?starttls=maybe", "starttls"),
        (f"imap://bounces:{SECRET}@mail.example.com?{SECRET}=1", "option"),
    ],
)
def test_bad_urls_name_the_part_and_never_the_password(url: str, part: str) -> None:
    with pytest.raises(MailboxError) as caught:
        MailboxURL.parse(url)
    text = str(caught.value)
    assert part in text
    assert text.startswith("mailbox URL: ")
    for piece in (SECRET, "Hunter2", "very-secret"):
        assert piece not in text
    # Nothing chained is printed with it (urllib's own errors quote the URL).
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_poll_parses_a_string_url_and_rejects_a_negative_limit() -> None:
    with pytest.raises(MailboxError, match="scheme"):
        poll("smtp://u:p@h", recorder())
    with pytest.raises(ValueError, match="limit"):
        poll("imap://u:p@h", recorder(), limit=-1)
