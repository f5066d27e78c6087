"""Read and empty a mailbox over IMAP or POP3: the bounce mailbox ``newsletter bounces poll``
reads (stdlib :mod:`imaplib` and :mod:`poplib`, nothing else).

URL: ``imaps://user:password@host:993/INBOX`` (implicit TLS), ``imap://...?starttls=1``,
``pop3s://user:password@host:995`` or ``pop3://...?starttls=1``; plain ``imap://`` and
``pop3://`` without STARTTLS are for a server on the same host. Percent-encode special
characters in the user, password and folder. ``?cafile=/path`` trusts a private CA instead of
the system's (certificates are always verified). Default ports: 143, 993, 110, 995.

:func:`poll` hands each message, oldest first, to a handler and deletes it only when the
handler returns True: the handler commits what it took from the message before returning, so a
crash between the two re-delivers a message (the caller de-duplicates) and never loses one.
A message the handler refuses or fails on stays for the next poll and is reported, and the
poll goes on: one bad message must not block the mailbox. Nothing is marked read before it is
handled (IMAP ``BODY.PEEK[]``), and the deletions of handled messages are committed even when
a later message fails.

The password is in no exception message, log line or repr: errors name the mailbox with
:meth:`MailboxURL.describe` and say what failed, in one line.
"""

from __future__ import annotations

import base64
import imaplib
import logging
import poplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
#: How many kept messages' error lines a :class:`PollResult` carries.
MAX_ERRORS = 5
#: The longest line accepted from a POP3 server. poplib's own limit (2048) refuses real mail:
#: bounce reports quote HTML bodies whose lines are far longer than RFC 5322's 998.
MAX_POP3_LINE = 1_000_000

_EXAMPLE = "imaps://user:password@host:993/INBOX"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class MailboxError(NewsletterError, RuntimeError):
    """The mailbox can't be read: a bad URL, or a connection, TLS, login or protocol failure.

    The text is one line that names the mailbox (never the password) and what failed, e.g.
    ``imap://bounces@127.0.0.1:1143/INBOX: login refused: Authentication failed.``
    """


@dataclass(frozen=True, slots=True)
class MailboxURL:
    """A parsed mailbox URL. ``folder`` is the IMAP folder ("" for POP3); ``starttls`` upgrades
    a plain ``imap``/``pop3`` connection; ``cafile`` replaces the system's trusted CAs."""

    scheme: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    starttls: bool = False
    cafile: str | None = None

    @classmethod
    def parse(cls, url: str) -> MailboxURL:
        """Parse and check a mailbox URL; user, password and folder are percent-decoded.

        A :class:`MailboxError` names the part that is wrong (scheme, host, port, user,
        password, folder, option) but quotes nothing from the URL: a password with an
        unencoded ``/``, ``?`` or ``#`` splits the URL in unexpected places, so any quoted
        piece could be part of it.
        """
        try:
            parts = urlsplit(url.strip())
            scheme = parts.scheme.lower()
        except ValueError:
            raise MailboxError(
                f"mailbox URL: can't parse it (e.g. {_EXAMPLE}; percent-encode special "
                "characters in the user and password)"
            ) from None
        if scheme not in DEFAULT_PORTS:
            raise MailboxError(
                f"mailbox URL: the scheme must be imap, imaps, pop3 or pop3s, e.g. {_EXAMPLE}"
            )
        if "@" not in parts.netloc:
            hint = (
                " (if the password has '/', '?' or '#' in it, percent-encode them: %2F %3F %23)"
                if "@" in url
                else ""
            )
            raise MailboxError(
                f"mailbox URL: the user and password go before the host: {_EXAMPLE}{hint}"
            )
        try:
            port = parts.port
        except ValueError:  # its message quotes the "port", which may be half the password
            port = -1
        host = parts.hostname
        if not host:
            raise MailboxError(f"mailbox URL: the host is missing or malformed, e.g. {_EXAMPLE}")
        if port is None:
            port = DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise MailboxError(
                "mailbox URL: the port after the host must be a number from 1 to 65535 "
                "(if the password has ':', '/', '?', '#' or '@' in it, percent-encode them)"
            )
        if not parts.username:
            raise MailboxError(f"mailbox URL: the user is missing, e.g. {_EXAMPLE}")
        if not parts.password:
            raise MailboxError(
                f"mailbox URL: the password is missing after the user and ':', e.g. {_EXAMPLE}"
            )
        if parts.fragment or url.strip().endswith("#"):
            raise MailboxError(
                "mailbox URL: '#' is not allowed; percent-encode it (%23) in the folder"
            )
        imap = scheme.startswith("imap")
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if imap:
            folder = path or "INBOX"
        elif path:
            raise MailboxError("mailbox URL: POP3 has no folders; remove the folder after the host")
        else:
            folder = ""
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        if set(options) - {"starttls", "cafile"}:
            raise MailboxError(
                "mailbox URL: unknown option; the options are ?starttls=1 and ?cafile=/path"
            )
        starttls_flag = options.get("starttls", "0").strip().lower()
        if starttls_flag not in _TRUE | _FALSE:
            raise MailboxError("mailbox URL: ?starttls= must be 1 or 0")
        starttls = starttls_flag in _TRUE
        if starttls and scheme in ("imaps", "pop3s"):
            raise MailboxError(
                f"mailbox URL: {scheme}:// is TLS from the start; ?starttls=1 is for "
                f"{scheme[:-1]}://"
            )
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            user=unquote(parts.username),
            password=unquote(parts.password),
            folder=folder,
            starttls=starttls,
            cafile=options.get("cafile") or None,
        )

    @property
    def is_imap(self) -> bool:
        return self.scheme in ("imap", "imaps")

    def describe(self) -> str:
        """The mailbox without the password, for messages and logs:
        ``imaps://bounces@mail.example.com:993/INBOX`` (``?starttls=1`` when used)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        folder = f"/{self.folder}" if self.is_imap else ""
        tls = "?starttls=1" if self.starttls else ""
        return f"{self.scheme}://{self.user}@{host}:{self.port}{folder}{tls}"


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll did: ``seen`` messages were read (``handled + kept``); ``handled`` were
    deleted; ``kept`` stay for the next poll, the first :data:`MAX_ERRORS` with their reason
    in ``errors`` (one line each). Messages another poller deleted meanwhile are not counted."""

    seen: int
    handled: int
    kept: int
    errors: tuple[str, ...] = ()


def poll(
    url: str | MailboxURL,
    handle: Callable[[bytes], bool],
    *,
    timeout: float = 30.0,
    limit: int | None = None,
) -> PollResult:
    """Read the mailbox once: each message (oldest first, at most ``limit``) is fetched whole
    and passed to ``handle(raw_bytes)``; True deletes it, False or an exception keeps it.

    IMAP fetches with ``UID FETCH BODY.PEEK[]`` (nothing marked seen), flags handled messages
    ``\\Deleted`` as it goes and at the end expunges exactly those (``UID EXPUNGE``, or a plain
    ``EXPUNGE`` on a server without UIDPLUS, which also removes whatever else is flagged
    ``\\Deleted``). Messages already flagged ``\\Deleted`` when the poll starts (a poll that
    stopped before its expunge) are expunged without being handled again. POP3 uses RETR and
    DELE, committed by QUIT. Either way the deletions are committed even if ``handle`` raised
    something that is not an :class:`Exception` (it is re-raised afterwards).

    Raises :class:`MailboxError` when the mailbox can't be reached, logged into or committed;
    the caller's handled messages then come again next time.
    """
    box = url if isinstance(url, MailboxURL) else MailboxURL.parse(url)
    if limit is not None and limit < 0:
        raise ValueError("limit must be at least 0")
    tally = _Tally(box, handle, limit)
    if box.is_imap:
        _poll_imap(box, tally, timeout)
    else:
        _poll_pop3(box, tally, timeout)
    result = tally.result()
    log.info(
        "%s: %d messages, %d handled and deleted, %d kept",
        box.describe(),
        result.seen,
        result.handled,
        result.kept,
    )
    return result


# --- shared ----------------------------------------------------------------------------------


@dataclass
class _Tally:
    """The handler's side of a poll: calls it, counts, and records why a message is kept."""

    box: MailboxURL
    handle: Callable[[bytes], bool]
    limit: int | None
    seen: int = 0
    handled: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.seen >= self.limit

    def offer(self, label: str, raw: bytes) -> bool:
        """Whether the handler took the message (it is to be deleted)."""
        self.seen += 1
        try:
            taken = self.handle(raw)
        except Exception as exc:
            self.keep(label, f"the handler raised {type(exc).__name__}: {_one_line(str(exc))}")
            log.debug("%s: %s: the handler raised", self.box.describe(), label, exc_info=True)
            return False
        if not taken:
            self.keep(label, "the handler returned False")
            return False
        return True

    def fetch_failed(self, label: str, why: str) -> None:
        self.seen += 1
        self.keep(label, f"can't fetch it: {why}")

    def keep(self, label: str, why: str) -> None:
        self.kept += 1
        line = _scrub(f"{label}: {why}", self.box)
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(line)
        log.warning("%s: kept %s", self.box.describe(), line)

    def result(self) -> PollResult:
        return PollResult(self.seen, self.handled, self.kept, tuple(self.errors))


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _scrub(text: str, box: MailboxURL) -> str:
    """One line with the password blanked, should a server or library ever echo it."""
    flat = _one_line(text)
    if len(box.password) >= 4:
        flat = flat.replace(box.password, "***")
    return flat


def _decoded(data: Any) -> str:
    """Readable text from a server reply (bytes, str, or a list of them)."""
    if isinstance(data, list | tuple):
        return " ".join(_decoded(item) for item in data if item is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words (no traceback, no Python class names where avoidable)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"can't resolve the host: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text = _decoded(exc.args[0]) if exc.args else ""
    return text or type(exc).__name__


_PROTOCOL_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, poplib.error_proto)


@contextmanager
def _step(box: MailboxURL, what: str) -> Iterator[None]:
    """Turn a network or protocol failure during ``what`` into one-line MailboxError."""
    try:
        yield
    except _PROTOCOL_ERRORS as exc:
        raise MailboxError(_scrub(f"{box.describe()}: {what}: {_reason(exc)}", box)) from exc
    except UnicodeEncodeError:
        raise MailboxError(
            f"{box.describe()}: {what}: the server accepts only ASCII here "
            "(a non-ASCII user or password needs a server that offers AUTH=PLAIN)"
        ) from None


def _tls_context(box: MailboxURL) -> ssl.SSLContext:
    """The default verifying context, trusting only ``cafile`` when one is given."""
    try:
        return ssl.create_default_context(cafile=box.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise MailboxError(
            f"{box.describe()}: can't read the CA file {box.cafile}: {_reason(exc)}"
        ) from exc


# --- IMAP ------------------------------------------------------------------------------------

_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)


def _imap_folder(name: str) -> str:
    """A folder name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            wide = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(wide).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: list[int]) -> str:
    """``1:3,7`` for [1, 2, 3, 7]."""
    ranges: list[str] = []
    ordered = sorted(set(uids))
    start = prev = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
        if uid is not None:
            start = prev = uid
    return ",".join(ranges)


def _imap_open(box: MailboxURL, timeout: float) -> imaplib.IMAP4:
    """Connected, logged in, and the folder selected read-write."""
    conn: imaplib.IMAP4 | None = None
    try:
        with _step(box, "can't connect"):
            if box.scheme == "imaps":
                conn = imaplib.IMAP4_SSL(
                    box.host, box.port, ssl_context=_tls_context(box), timeout=timeout
                )
            else:
                conn = imaplib.IMAP4(box.host, box.port, timeout=timeout)
        if box.starttls:
            with _step(box, "STARTTLS failed"):
                conn.starttls(ssl_context=_tls_context(box))
        with _step(box, "login refused"):
            if "AUTH=PLAIN" in conn.capabilities:
                secret = b"\0" + box.user.encode() + b"\0" + box.password.encode()
                conn.authenticate("PLAIN", lambda _challenge: secret)
            elif "LOGINDISABLED" in conn.capabilities:
                raise MailboxError(
                    f"{box.describe()}: the server refuses logins without TLS "
                    "(use imaps:// or ?starttls=1)"
                )
            else:
                conn.login(box.user, box.password)
        with _step(box, "can't open the folder"):
            typ, data = conn.select(_imap_folder(box.folder))
            if typ != "OK":
                raise imaplib.IMAP4.error(_decoded(data))
        return conn
    except BaseException:
        if conn is not None:
            _imap_drop(conn)
        raise


def _imap_drop(conn: imaplib.IMAP4) -> None:
    try:
        conn.shutdown()
    except OSError:
        pass


def _imap_uids(box: MailboxURL, conn: imaplib.IMAP4, criterion: str) -> list[int]:
    with _step(box, f"can't list the messages ({criterion})"):
        typ, data = conn.uid("SEARCH", criterion)
        if typ != "OK":
            raise imaplib.IMAP4.error(_decoded(data))
    return sorted({int(uid) for line in data if line for uid in line.split()})


def _imap_fetch(box: MailboxURL, conn: imaplib.IMAP4, uid: int) -> bytes | str | None:
    """The raw message; None when it is gone (expunged by another poller); a str says why the
    server refused it."""
    with _step(box, f"connection lost fetching UID {uid}"):
        typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
    if typ != "OK":
        text = _decoded(data)
        return None if "EXPUNGEISSUED" in text.upper() else text
    for part in data:
        if not isinstance(part, tuple) or b"BODY[]" not in part[0].upper():
            continue
        found = _UID.search(part[0])
        if found is None or int(found.group(1)) == uid:
            return bytes(part[1])
    return None


def _imap_flag_deleted(box: MailboxURL, conn: imaplib.IMAP4, uid: int) -> str | None:
    """None once the message is flagged \\Deleted, else the server's reason."""
    with _step(box, f"connection lost deleting UID {uid}"):
        typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
    return None if typ == "OK" else _decoded(data) or "refused"


def _imap_expunge(box: MailboxURL, conn: imaplib.IMAP4, uids: list[int]) -> None:
    with _step(box, "can't expunge the deleted messages"):
        typ, data = conn.capability()
        capabilities = _decoded(data[-1:]).upper().split() if typ == "OK" else []
        if "UIDPLUS" in capabilities:
            typ, data = conn.uid("EXPUNGE", _uid_set(uids))
        else:
            typ, data = conn.expunge()
        if typ != "OK":
            raise imaplib.IMAP4.error(_decoded(data))


def _poll_imap(box: MailboxURL, tally: _Tally, timeout: float) -> None:
    conn = _imap_open(box, timeout)
    deleted: list[int] = []
    finished = False
    try:
        # Flagged \Deleted before we started: handled by a poll that stopped before its
        # expunge (or deleted by someone else). Expunged with ours, never handled twice.
        deleted.extend(_imap_uids(box, conn, "DELETED"))
        for uid in _imap_uids(box, conn, "UNDELETED"):
            if tally.full:
                break
            label = f"UID {uid}"
            raw = _imap_fetch(box, conn, uid)
            if raw is None:
                continue  # another poller took it meanwhile
            if isinstance(raw, str):
                tally.fetch_failed(label, raw)
                continue
            if not tally.offer(label, raw):
                continue
            refused = _imap_flag_deleted(box, conn, uid)
            if refused is None:
                deleted.append(uid)
                tally.handled += 1
            else:
                tally.keep(label, f"handled, but the server refused to delete it: {refused}")
        finished = True
    finally:
        try:
            if deleted:
                _imap_expunge(box, conn, deleted)
            with _step(box, "logout failed"):
                conn.logout()
        except MailboxError:
            _imap_drop(conn)
            if finished:
                raise
            # Already failing: don't hide the first error. Flagged messages are expunged by
            # the next poll.


# --- POP3 ------------------------------------------------------------------------------------


def _read_pop3_line(conn: poplib.POP3) -> tuple[bytes, int]:
    """poplib's ``_getline`` with a longer line limit (see :data:`MAX_POP3_LINE`)."""
    line = conn.file.readline(MAX_POP3_LINE + 1)
    if len(line) > MAX_POP3_LINE:
        raise poplib.error_proto(f"a line longer than {MAX_POP3_LINE} bytes")
    if not line:
        raise EOFError("the server closed the connection")
    octets = len(line)
    if line[-2:] == b"\r\n":
        return line[:-2], octets
    if line[:1] == b"\r":
        return line[1:-1], octets
    return line[:-1], octets


class _POP3(poplib.POP3):
    def _getline(self) -> tuple[bytes, int]:
        return _read_pop3_line(self)


class _POP3SSL(poplib.POP3_SSL):
    def _getline(self) -> tuple[bytes, int]:
        return _read_pop3_line(self)


def _pop3_open(box: MailboxURL, timeout: float) -> poplib.POP3:
    conn: poplib.POP3 | None = None
    try:
        with _step(box, "can't connect"):
            if box.scheme == "pop3s":
                conn = _POP3SSL(box.host, box.port, timeout=timeout, context=_tls_context(box))
            else:
                conn = _POP3(box.host, box.port, timeout=timeout)
        if box.starttls:
            with _step(box, "STARTTLS (STLS) failed"):
                conn.stls(context=_tls_context(box))
        with _step(box, "login refused"):
            conn.user(box.user)
            conn.pass_(box.password)
        return conn
    except BaseException:
        if conn is not None:
            conn.close()
        raise


def _pop3_refusal(exc: poplib.error_proto) -> str | None:
    """The server's ``-ERR`` answer, or None when poplib itself failed (a truncated or
    overlong reply: the connection is out of step and can't be used further)."""
    text = _decoded(exc.args[0]) if exc.args else ""
    return text if text.startswith("-ERR") else None


def _pop3_vanished(refusal: str) -> bool:
    """Whether a RETR refusal means another session expunged the message (Dovecot:
    ``-ERR Message 3 expunged.``; others: ``no such message``)."""
    lowered = refusal.lower()
    return "expunged" in lowered or "no such message" in lowered or "deleted" in lowered


def _poll_pop3(box: MailboxURL, tally: _Tally, timeout: float) -> None:
    conn = _pop3_open(box, timeout)
    finished = False
    try:
        with _step(box, "can't list the messages"):
            _, listing, _ = conn.list()
        for number in sorted(int(line.split()[0]) for line in listing if line.strip()):
            if tally.full:
                break
            label = f"message {number}"
            with _step(box, f"connection lost fetching {label}"):
                try:
                    _, lines, _ = conn.retr(number)
                except poplib.error_proto as exc:
                    refusal = _pop3_refusal(exc)
                    if refusal is None:
                        raise
                    if not _pop3_vanished(refusal):  # else another poller took it meanwhile
                        tally.fetch_failed(label, refusal)
                    continue
            if not tally.offer(label, b"".join(line + b"\r\n" for line in lines)):
                continue
            with _step(box, f"connection lost deleting {label}"):
                try:
                    conn.dele(number)
                except poplib.error_proto as exc:
                    refusal = _pop3_refusal(exc)
                    if refusal is None:
                        raise
                    tally.keep(label, f"handled, but the server refused to delete it: {refusal}")
                    continue
            tally.handled += 1
        finished = True
    finally:
        try:
            # QUIT commits the DELEs; a connection closed without it forgets them.
            with _step(box, "can't commit the deletions (QUIT)"):
                conn.quit()
        except MailboxError:
            conn.close()
            if finished:
                raise
