"""SMTP backend: one reused connection, STARTTLS or implicit TLS, AUTH, per-recipient status.

URL: ``smtp://user:password@host:port?starttls=1&timeout=30&helo=name`` (port 587 by default
with STARTTLS, 25 without) or ``smtps://...`` for implicit TLS (port 465). Percent-encode
special characters in the user and password. A 4xx reply makes the recipient ``deferred``
(retry later), a 5xx makes it ``rejected``; a lost connection is re-opened once per message.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from functools import partial
from typing import Self
from urllib.parse import unquote, urlsplit

from newsletter.backends.base import (
    BackendError,
    HandoverError,
    ProbeResult,
    ReportingBackend,
    SendResult,
    SendStatus,
    flag,
    query_options,
)
from newsletter.backends.smtp_socket import KernelTimedSMTP
from newsletter.edition.message import OutgoingMessage, dot_stuffed

#: Hosts a password may reach without TLS: it never crosses a network.
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_UNREACHABLE_HINT = (
    "Check the host and port in NEWSLETTER_MAIL_BACKEND and that the server accepts "
    "connections from this machine."
)


def _status_for(code: int) -> SendStatus:
    if 400 <= code < 500:
        return SendStatus.deferred
    if 500 <= code < 600:
        return SendStatus.rejected
    return SendStatus.unknown


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SMTPBackend(ReportingBackend):
    schemes = ("smtp", "smtps")

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        use_ssl: bool = False,
        starttls: bool = False,
        timeout: float = 30.0,
        helo: str | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.username, self._password = username, password
        self.use_ssl, self.starttls = use_ssl, starttls
        self.timeout, self.helo, self.verify = timeout, helo, verify
        self.connection: smtplib.SMTP | None = None
        #: The message whose envelope went out with the previous body (pipelining); its
        #: replies wait on the connection until its turn.
        self._ahead: OutgoingMessage | None = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        if not parts.hostname:
            raise BackendError("SMTP backend URL needs a host: smtp://user:pass@host:port")
        options = query_options(url)
        use_ssl = parts.scheme == "smtps" or flag(options, "ssl", False)
        starttls = flag(options, "starttls", False)
        if use_ssl and starttls:
            raise BackendError("choose one of smtps:// (implicit TLS) and ?starttls=1")
        # urllib's messages may quote part of the password: say which part is wrong only.
        try:
            port = parts.port or (465 if use_ssl else 587 if starttls else 25)
        except ValueError:
            hint = (
                " (if the password has ':', '/', '?', '#' or '@' in it, percent-encode them)"
                if "@" in parts.netloc
                else ""
            )
            raise BackendError(
                "SMTP backend URL: the port after the host must be a number from 1 to 65535, "
                f"e.g. smtp://host:587{hint}"
            ) from None
        try:
            timeout = float(options.get("timeout", "30"))
        except ValueError:
            timeout = float("nan")
        if not 0 < timeout <= 86_400:  # nan, 0 (no limit at all) and inf fail here too
            raise BackendError(
                "SMTP backend URL: ?timeout= must be a number of seconds above 0 and at most "
                "86400, e.g. ?timeout=30"
            )
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_ssl=use_ssl,
            starttls=starttls,
            timeout=timeout,
            helo=options.get("helo") or None,
            verify=flag(options, "verify", True),
        )

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def open(self) -> bool:
        if self.connection is not None:
            return False
        conn: smtplib.SMTP | None = None
        try:
            if self.use_ssl:
                conn = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.helo,
                    timeout=self.timeout,
                    context=self._tls_context(),
                )
            else:
                # Plain TCP: the kernel keeps the timeout, one system call a send or receive
                # (see smtp_socket); STARTTLS keeps smtplib's own socket.
                plain = KernelTimedSMTP if not self.starttls else smtplib.SMTP
                conn = plain(self.host, self.port, local_hostname=self.helo, timeout=self.timeout)
            if self.starttls:
                conn.starttls(context=self._tls_context())
            if self.username:
                conn.login(self.username, self._password or "")
        except (OSError, smtplib.SMTPException) as exc:
            if conn is not None:
                conn.close()
            code = exc.smtp_code if isinstance(exc, smtplib.SMTPResponseException) else None
            raise BackendError(
                f"can't open SMTP connection to {self.describe()}: {exc}",
                transient=_transient_open_failure(exc),
                code=code,
            ) from exc
        if conn.sock is not None:  # pipelined commands go out at once, not after an ACK
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection = conn
        return True

    def close(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """One transaction per message; each answer is reported before the next message.

        With PIPELINING the next message's MAIL, RCPT and DATA go out in the same write as this
        message's body (RFC 2920 allows commands after the end of data), so each message costs
        one round trip instead of two. The next envelope's replies are read right after this
        message's final reply; nothing of the next message is handed over before its 354.
        """
        opened_here = self.open()
        results: list[SendResult] = []
        try:
            for index, message in enumerate(messages):
                following = messages[index + 1] if index + 1 < len(messages) else None
                handed = None if on_handover is None else partial(on_handover, index)
                results.append(self._send_one(message, following, handed))
                on_result(index, results[-1])
            return results
        finally:
            if self._ahead is not None:
                # Stopped early (the caller raised) with an envelope's replies unread: they
                # would answer the next command, so this connection can't be used again.
                self._drop()
            if opened_here:
                self.close()

    def _send_one(
        self,
        message: OutgoingMessage,
        following: OutgoingMessage | None = None,
        handed: Callable[[], None] | None = None,
    ) -> SendResult:
        """One SMTP transaction. A connection lost before DATA is retried once on a new
        connection (nothing was handed over); lost during or after DATA it is ``unknown`` and
        never retried here, because the server may already have accepted the message.
        ``handed()`` is called right before the end-of-data dot is written."""
        for attempt in (1, 2):
            if self.connection is None:
                self._ahead = None
                try:
                    self.open()
                except BackendError as exc:
                    return SendResult(SendStatus.deferred, None, str(exc))
            assert self.connection is not None
            handed_over = False
            try:
                ahead, self._ahead = self._ahead, None
                if ahead is not None and ahead is message:
                    result = self._judge(self.connection, self._read_ahead())
                else:
                    result = self._envelope(self.connection, message)
                if result is not None:
                    return result
                handed_over = True
                next_envelope = self._pipelined_envelope(self.connection, following)
                code, reply = self._payload(
                    self.connection,
                    message.wire_parts or (dot_stuffed(message.data),),
                    next_envelope,
                    handed,
                )
            except HandoverError:
                self._drop()  # the dot's reply is unread: this connection can't be reused
                raise
            except smtplib.SMTPResponseException as exc:  # e.g. HELO refused
                self._drop()
                return SendResult(_status_for(exc.smtp_code), exc.smtp_code, _text(exc.smtp_error))
            except (UnicodeError, ValueError) as exc:  # an address smtplib can't encode
                self._reset()
                return SendResult(SendStatus.invalid, None, f"can't send to this address: {exc}")
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                if handed_over:
                    return SendResult(
                        SendStatus.unknown, None, f"connection lost during DATA: {exc}"
                    )
                if attempt == 2:
                    return SendResult(SendStatus.deferred, None, f"connection lost: {exc}")
                continue
            if next_envelope is not None:
                # Its replies are read when it is that message's turn: this answer goes to the
                # caller (and its journal) first, without waiting for three more replies.
                self._ahead = following
            if code == 250:
                return SendResult(SendStatus.sent, code, _text(reply))
            return SendResult(_status_for(code), code, _text(reply))
        raise AssertionError("unreachable")

    @staticmethod
    def _pipelining(conn: smtplib.SMTP) -> bool:
        return bool(conn.does_esmtp and conn.has_extn("pipelining"))

    def _pipelined_envelope(
        self, conn: smtplib.SMTP, following: OutgoingMessage | None
    ) -> bytes | None:
        """The next message's envelope commands, to ride along with this body; None when it
        can't (no PIPELINING, no next message, or an address the normal path must refuse)."""
        if following is None or not self._pipelining(conn):
            return None
        commands = self._commands(following)
        if isinstance(commands, SendResult):
            return None
        return commands[0] + commands[1] + b"DATA\r\n"

    def _read_ahead(self) -> list[tuple[int, bytes]]:
        """The replies to the envelope sent ahead with the previous body. A lost connection
        here loses nothing: only the envelope was sent (the caller retries on a new one)."""
        assert self.connection is not None
        return [self.connection.getreply() for _ in range(3)]

    @staticmethod
    def _commands(message: OutgoingMessage) -> tuple[bytes, bytes] | SendResult:
        sender, rcpt = message.sender, message.recipient
        if not (sender + rcpt).isascii() or any(c in sender + rcpt for c in "\r\n<> "):
            return SendResult(SendStatus.invalid, None, f"unsafe envelope address {rcpt!r}")
        return (
            f"MAIL FROM:<{sender}>\r\n".encode("ascii"),
            f"RCPT TO:<{rcpt}>\r\n".encode("ascii"),
        )

    def _envelope(self, conn: smtplib.SMTP, message: OutgoingMessage) -> SendResult | None:
        """MAIL FROM, RCPT TO and DATA; a result if any was refused, None once DATA got 354.

        With PIPELINING (RFC 2920) the three commands go out in one write and the three replies
        are read after: one round trip instead of three.
        """
        conn.ehlo_or_helo_if_needed()
        commands = self._commands(message)
        if isinstance(commands, SendResult):
            return commands
        mail_cmd, rcpt_cmd = commands
        if self._pipelining(conn):
            conn.send(mail_cmd + rcpt_cmd + b"DATA\r\n")
            replies = [conn.getreply(), conn.getreply(), conn.getreply()]
        else:
            replies = []
            for command, ok in ((mail_cmd, (250,)), (rcpt_cmd, (250, 251)), (b"DATA\r\n", (354,))):
                conn.send(command)
                replies.append(conn.getreply())
                if replies[-1][0] not in ok:
                    break
        return self._judge(conn, replies)

    def _judge(self, conn: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> SendResult | None:
        """None if the envelope's replies end in 354 (send the body now), else the refusal."""
        (mail_code, mail_reply), *rest = replies
        failed: tuple[int, bytes] | None = None
        if mail_code != 250:
            failed = (mail_code, mail_reply)
        elif rest and rest[0][0] not in (250, 251):
            failed = rest[0]
        elif len(rest) < 2 or rest[1][0] != 354:
            failed = rest[1] if len(rest) > 1 else (0, b"DATA not reached")
        if failed is None:
            return None
        if len(rest) > 1 and rest[1][0] == 354:  # a server that said 354 anyway: send nothing
            conn.send(b".\r\n")
            conn.getreply()
        self._reset()
        return SendResult(_status_for(failed[0]), failed[0], _text(failed[1]))

    @staticmethod
    def _payload(
        conn: smtplib.SMTP,
        wire: tuple[bytes, ...],
        then: bytes | None = None,
        handed: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """The message as DATA sends it (``wire``: dot-stuffed, with the end-of-data line, in
        pieces; see :func:`dot_stuffed`, one ``bytes.replace`` where smtplib's regex costs
        ~300 us on a 50 KB message), then the final reply. ``then`` (the next envelope) goes
        out in the same write.

        ``handed()`` runs right *before* the write that carries the end-of-data dot: the
        hand-over is in the journal before the server can count the message, so a process
        killed at any moment never leaves a delivered message looking unsent (RFC 1047's
        window, which would re-send it). Killed between the journal line and the write, the
        message is recorded ``unknown`` although the server never got its dot: an operator
        re-sends it with ``retry-failed --include-unknown``; nobody is mailed twice. (A
        process killed after the write still gets its bytes delivered: the kernel sends what
        it holds, then FIN; nothing is unread, so no RST.)"""
        # One write: a separate small write for the terminator would wait for the peer's
        # delayed ACK (Nagle), ~40 ms per message.
        if handed is not None:
            try:
                handed()
            except Exception as exc:
                raise HandoverError(f"recording the hand-over failed: {exc}", sent=False) from exc
        # One gathering write of the pieces (and the next envelope), without joining 53 KB.
        _send_parts(conn, (*wire, then) if then else wire)
        return conn.getreply()

    def _reset(self) -> None:
        """RSET after a refused step, so the connection is clean for the next message."""
        if self.connection is None:
            return
        try:
            self.connection.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        self._ahead = None
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def describe(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        scheme = "smtps" if self.use_ssl else "smtp"
        tls = "?starttls=1" if self.starttls else ""
        return f"{scheme}://{user}{self.host}:{self.port}{tls}"

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Open and close a connection (EHLO, STARTTLS and AUTH as configured): no MAIL FROM,
        so nothing is sent. The hint names the likely cause of a refusal."""
        configured, self.timeout = self.timeout, min(self.timeout, timeout)
        try:
            opened = self.open()
        except BackendError as exc:
            return ProbeResult(False, str(exc), _open_failure_hint(exc.__cause__))
        finally:
            self.timeout = configured
        if opened:
            self.close()
        tls = self.use_ssl or self.starttls
        found = f"{self.describe()}: connected, {'TLS' if tls else 'no TLS'}, "
        found += f"logged in as {self.username}" if self.username else "no login"
        if self.username and not tls and self.host not in _LOOPBACK:
            hint = "Add ?starttls=1 (or use smtps://) in NEWSLETTER_MAIL_BACKEND."
            return ProbeResult(None, found + ": the password crossed the network in clear", hint)
        return ProbeResult(True, found)


def _open_failure_hint(cause: BaseException | None) -> str:
    if isinstance(cause, smtplib.SMTPAuthenticationError):
        return (
            "The server refused the login: check the user and password in "
            "NEWSLETTER_MAIL_BACKEND (percent-encode special characters)."
        )
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        return (
            "The server offers no login here: most want ?starttls=1 (port 587) or "
            "smtps:// (port 465) in NEWSLETTER_MAIL_BACKEND first."
        )
    if isinstance(cause, ssl.SSLError):
        return (
            "TLS failed: check smtps:// versus ?starttls=1 and the port in "
            "NEWSLETTER_MAIL_BACKEND (?verify=0 only for a test server)."
        )
    return _UNREACHABLE_HINT


def _transient_open_failure(exc: BaseException) -> bool:
    """Whether a failure to open a connection is worth retrying later: a 4xx greeting or reply
    (421 "too busy"), a refused, reset or timed-out connection. Not: a 5xx, refused
    credentials, or a TLS certificate that does not verify (those need the operator)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError | ssl.SSLError):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, OSError | smtplib.SMTPServerDisconnected)


def _send_parts(conn: smtplib.SMTP, parts: tuple[bytes, ...]) -> None:
    """``conn.send(b"".join(parts))`` as one gathering ``sendmsg`` (with smtplib's errors):
    the parts reach the socket in as few segments as the joined bytes would."""
    sock = conn.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    if isinstance(sock, ssl.SSLSocket):  # TLS has no sendmsg: it encrypts one buffer at a time
        conn.send(b"".join(parts))
        return
    try:
        # A blocking socket nearly always takes everything at once: then nothing is walked
        # (counting the ~20 pieces off one by one; a few us a message).
        sent = sock.sendmsg(parts)
        if sent == sum(map(len, parts)):
            return
        # The kernel took part (a full send buffer, a signal): the pieces as they are (a
        # memoryview each would cost ~2 us), only a piece it took part of becomes a view.
        pending: list[bytes | memoryview] = [p for p in parts if p]
        while True:
            done = 0
            while done < len(pending) and sent >= len(pending[done]):
                sent -= len(pending[done])
                done += 1
            del pending[:done]
            if not pending:
                return
            if sent:
                pending[0] = memoryview(pending[0])[sent:]
            sent = sock.sendmsg(pending)
    except OSError:
        conn.close()
        raise smtplib.SMTPServerDisconnected("Server not connected") from None
