"""Bounce and complaint reports that arrive as mail: RFC 3464 DSNs, RFC 5965 ARF, plain bounces.

A message sent with the return path ``bounces+<edition>-<subscriber>-<sig>@domain``
(:mod:`newsletter.edition.verp`) that cannot be delivered comes back as a delivery status
notification (``multipart/report; report-type=delivery-status``); a reader who presses "this is
spam" at a mailbox provider with a feedback loop comes back as an ARF report
(``report-type=feedback-report``); old MTAs (Exim without DSN, qmail) send a plain-text
bounce. :func:`parse` turns the raw bytes of any of them into :class:`BounceReport` values (one
per failed recipient or per complaint) and returns ``[]`` for everything else: out-of-office
replies, delay warnings, ``delivered``/``relayed``/``expanded`` recipients, ARF types that are
not complaints, ordinary mail.

The module is pure (bytes in, values out: no database, network or clock) and does not decide
which delivery a report is about. :attr:`BounceReport.addresses` lists every address where our
signed return path may appear; the caller checks them with
:meth:`newsletter.edition.verp.ReturnPaths.first`, because the rest of a report is written by
whoever sent it and proves nothing on its own.

Everything in a report is untrusted input: each field is read only up to a bounded length, text
comes out on one line, and malformed content yields fewer reports, never an exception. Only
bytes that are not a mail message at all (empty, binary) raise :class:`NotAReport`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.parser import Parser
from email.policy import compat32
from email.utils import parsedate_to_datetime

from newsletter.webhooks.base import EventKind, clip

DIAGNOSTIC_MAX = 500

_PARSE_MAX_BYTES = 4 * 1024 * 1024  # a report is small; a huge returned original is cut
_HEAD_SCAN_BYTES = 64 * 1024  # how much of the header block the binary check looks at
_TEXT_MAX = 256 * 1024  # characters of one text part that are read
_FIELD_MAX = 4000  # characters of one header value that are read
_FIELDS_PER_NAME = 50  # values of one repeated header that are read
_ADDRESS_MAX = 320
_ID_MAX = 250
_REPORTER_MAX = 200
_MAX_PARTS = 200
_MAX_GROUPS = 100
_MAX_ADDRESSES = 32

_NOT_FAILED = frozenset({"delayed", "delivered", "relayed", "expanded"})
_COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "text/global-headers",
        "message/global-headers",
    }
)

#: An RFC 3463 enhanced status code, not part of a longer dotted number (an IP address).
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
#: A diagnostic's type prefix ("smtp;", "X-Postfix;").
_DIAGNOSTIC_TYPE = re.compile(r"^\s*[A-Za-z][\w-]{0,30}\s*;\s*")
_LEADING_REPLY = re.compile(r"^[#'\"(]?([245]\d\d)(?![\d.])")
_SAID_REPLY = re.compile(r"said:?\s*([245]\d\d)(?![\d.])", re.IGNORECASE)
#: An SMTP reply quoted in a plain-text bounce: "550 5.1.1 ...", "550-5.1.1", "554 delivery".
_REPLY_IN_TEXT = re.compile(r"(?<![\w.\-\[])([45]\d\d)(?=[ \-:][ #]?[\w<])")
#: Wording for "this address does not exist", trusted only with a generic status code.
_NO_SUCH_ADDRESS = re.compile(
    r"user unknown|unknown user|no such user|does not exist|doesn[’']?t exist"
    r"|mailbox unavailable|recipient not found|recipientnotfound|invalid recipient"
    r"|(?<!sender )address rejected|no mailbox|unknown recipient|no such recipient"
    r"|mailbox not found|(?:does not|doesn[’']?t) have an? [\w.-]+ account"
    r"|unrouteable address|account (?:has been )?disabled",
    re.IGNORECASE,
)
#: A refusal about our envelope sender or domain, whatever its code.
_ABOUT_US = re.compile(
    r"sender address rejected|sender domain|return.path|mail from .{0,40}rejected",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s@]{1,256}@[^<>\s@]{1,256})\s*>")
_BARE_ADDRESS = re.compile(r"[^\s<>,;:()\"'\[\]@]{1,256}@[^\s<>,;:()\"'\[\]@]{1,256}")
_ANGLE_ID = re.compile(r"<[^<>\s]{1,248}>")
_REDACTED_LOCAL = re.compile(r"redacted.*|x{3,}|\*+|#+", re.IGNORECASE)
_DAEMON_LOCAL = re.compile(r"mailer-daemon|postmaster|double-bounce", re.IGNORECASE)

#: Wording that marks a plain-text (non-DSN) bounce from a mail server.
_PLAIN_MARKERS = (
    "this message was created automatically by mail delivery software",
    "this is the qmail-send program",
    "i'm afraid i wasn't able to deliver your message",
    "sorry, we were unable to deliver your message",
    "this is the mail system at host",
    "the following address(es) failed",
    "could not be delivered to one or more recipients",
    "delivery to the following recipient",
    "delivery has failed to these recipients",
    "the original message was received at",
)
_DAEMON_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|problem)|returned mail"
    r"|failure notice|mail delivery failed|returning message to sender",
    re.IGNORECASE,
)
#: Wording of a warning that delivery is still being retried (not a failure).
_DELAY_MARKERS = (
    "has not yet been delivered",
    "no action is required on your part",
    "this is a warning only",
    "will continue to try",
    "still being retried",
)
#: The line after which a plain-text bounce quotes the returned message.
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:this is a copy of|below this line is a copy of|original message"
    r"|the (?:original )?message (?:headers )?follow|undelivered message)[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)


class NotAReport(ValueError):
    """The bytes are not an email message at all: empty, no header fields, or binary data
    (NULs, control bytes) where the header fields should be.

    Anything that *is* a message but not a bounce or complaint gives ``[]`` instead: an
    intake mailbox receives all kinds of mail, and only garbage is worth an error."""


@dataclass(frozen=True, slots=True)
class BounceReport:
    """One failed recipient of a DSN, one ARF complaint, or one plain-text bounce.

    ``recipient`` is the address the original was sent to (bare, no ``rfc822;``), or None when
    the report redacts or omits it. ``status`` is the RFC 3463 code ("" for complaints and when
    nothing gives one); a generic ``X.0.0`` is replaced by the more precise code of the same
    class quoted in the diagnostic. ``diagnostic`` is one line of at most
    :data:`DIAGNOSTIC_MAX` characters (the feedback type for a complaint).
    ``original_message_id`` keeps its angle brackets. ``addresses`` are the places our VERP
    return path may appear, in the order found, without duplicates. ``report_id`` is stable
    across re-reads of the same report and differs per recipient. ``occurred_at`` is aware
    (UTC) or None.
    """

    kind: EventKind
    recipient: str | None
    status: str
    diagnostic: str
    original_message_id: str | None
    addresses: tuple[str, ...]
    report_id: str
    occurred_at: datetime | None
    reporter: str


# --- classification ---------------------------------------------------------------------------


def classify(status: str, action: str = "failed", diagnostic: str = "") -> EventKind | None:
    """What one DSN recipient (or a rejection) means for the address, or None when nothing failed.

    - Action ``delayed``/``delivered``/``relayed``/``expanded``, or a 2.x.x status: None.
    - 5.1.x (bad mailbox, domain or syntax, moved, null MX) and 5.2.1 (disabled): hard.
    - 5.0.0, 5.5.0 or no status, when the diagnostic says the address does not exist ("user
      unknown", "no such user", "RecipientNotFound", ...): hard.
    - 5.7.x (policy, spam, authentication: "unauthenticated", "blocked"), 5.3.x and 5.6.x
      (the receiving system or our message's content), and anything about our own return
      path (5.1.7, 5.1.8, "sender address rejected"): blocked. Our fault, never the address's:
      a broken DKIM record must not suppress every Gmail reader three editions later.
    - Any other 5.x.x (mailbox full, routing): soft. Counted rather than suppressing at once.
    - 4.x.x with action ``failed`` (the MTA gave up retrying): soft.
    - No code anywhere: soft, or hard with the "does not exist" wording.

    A missing ``status`` is taken from the diagnostic ("smtp; 550 5.1.1 ..." or a bare
    "550 ..."), and a generic X.0.0 is refined by a code of the same class found there.
    """
    match = re.match(r"\s*([a-z]+)", action.lower())
    if match and match.group(1) in _NOT_FAILED:
        return None
    code = _effective_status(status, diagnostic)
    if not code:
        return _hard_if_unknown_address(diagnostic)
    klass, subject, detail = code.split(".")
    if klass == "2":
        return None
    if (subject, detail) in {("1", "7"), ("1", "8")} or _ABOUT_US.search(diagnostic):
        return EventKind.blocked
    if klass == "5" and subject in {"3", "6", "7"}:
        return EventKind.blocked
    if klass == "4":
        return EventKind.bounced_soft
    if subject == "1" or (subject, detail) == ("2", "1"):
        return EventKind.bounced_hard
    if (subject, detail) in {("0", "0"), ("5", "0")}:
        return _hard_if_unknown_address(diagnostic)
    return EventKind.bounced_soft


def classify_reply(code: int, text: str) -> EventKind | None:
    """What an SMTP reply at send time means: a 5xx is classified like a failed DSN recipient
    (with the enhanced code in ``text``, else ``5.0.0``); a 4xx will be retried, so None."""
    if code // 100 != 5:
        return None
    found = _status_code(text)
    status = found if found.startswith("5.") else "5.0.0"
    return classify(status, "failed", text)


def _hard_if_unknown_address(diagnostic: str) -> EventKind:
    if _NO_SUCH_ADDRESS.search(diagnostic):
        return EventKind.bounced_hard
    return EventKind.bounced_soft


def _status_code(text: str) -> str:
    """The first enhanced status code in ``text``, normalized ("5.01.1" -> "5.1.1"), or ""."""
    match = _ENHANCED.search(text[:_FIELD_MAX])
    if match is None:
        return ""
    return ".".join(str(int(group)) for group in match.groups())


def _reply_code(diagnostic: str) -> str:
    """The SMTP reply code a diagnostic starts with (after "smtp;"), or quotes after "said"."""
    text = _DIAGNOSTIC_TYPE.sub("", diagnostic[:_FIELD_MAX], count=1).lstrip()
    match = _LEADING_REPLY.match(text) or _SAID_REPLY.search(text)
    return match.group(1) if match else ""


def _effective_status(status: str, diagnostic: str) -> str:
    """The status code to act on: ``status``'s code, refined or supplied by the diagnostic."""
    code = _status_code(status)
    found = _status_code(diagnostic)
    if not code:
        if found:
            return found
        reply = _reply_code(diagnostic)
        return f"{reply[0]}.0.0" if reply else ""
    if code.endswith(".0.0") and found[:1] == code[:1] and not found.endswith(".0.0"):
        return found
    return code


# --- parsing ------------------------------------------------------------------------------------


def parse(data: bytes) -> list[BounceReport]:
    """The bounce and complaint reports in one raw message (see the module docstring).

    Raises :class:`NotAReport` only for bytes that are not a message; every other input,
    however malformed, gives a (possibly empty) list.
    """
    raw = bytes(data)
    if not raw.strip():
        raise NotAReport("empty message")
    if _looks_binary(raw):
        raise NotAReport("not a mail message (binary data in the header block)")
    try:
        msg = message_from_bytes(raw[:_PARSE_MAX_BYTES], policy=compat32)
    except RecursionError:  # MIME parts nested thousands deep: no real report looks like that
        return []
    if not msg.keys():
        raise NotAReport("not a mail message (no header fields)")

    parts = _walk(msg)
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            return _from_arf(msg, raw, part, parts)
    status_parts = [part for part in parts if part.get_content_type() in _STATUS_TYPES]
    if status_parts:
        reports: list[BounceReport] = []
        for part in status_parts:
            reports.extend(_from_dsn(msg, raw, part, parts))
        return reports
    return _from_plain(msg, raw, parts)


def _from_dsn(
    msg: Message, raw: bytes, status_part: Message, parts: list[Message]
) -> list[BounceReport]:
    """One report per failed recipient group of an RFC 3464 ``message/delivery-status`` part."""
    groups = _field_groups(status_part)
    if not groups:
        return []
    per_message: Message = groups[0]
    recipients = groups[1:]
    if _field(per_message, "Action") or _field(per_message, "Final-Recipient"):
        per_message, recipients = Message(), groups  # the per-message group is missing
    original = _original_headers(parts)
    addresses = _report_addresses(msg, original, [_field(per_message, "X-Postfix-Sender")])
    original_id = _original_message_id(original, per_message, msg)
    occurred = _when(_field(per_message, "Arrival-Date")) or _when(_field(msg, "Date"))
    reporter = _strip_type(_field(per_message, "Reporting-MTA")) or _from_address(msg)

    reports = []
    for group in recipients:
        action = _field(group, "Action")
        diagnostic = _field(group, "Diagnostic-Code")
        kind = classify(_field(group, "Status"), action or "failed", diagnostic)
        if kind is None:
            continue
        status = _effective_status(_field(group, "Status"), diagnostic)
        recipient = _dsn_recipient(group)
        reason = _unfold_reply(_DIAGNOSTIC_TYPE.sub("", diagnostic, count=1))
        if not reason:
            reason = f"{action or 'failed'} ({status or 'no status'})"
        reports.append(
            BounceReport(
                kind=kind,
                recipient=recipient,
                status=status,
                diagnostic=_one_line(reason),
                original_message_id=original_id,
                addresses=addresses,
                report_id=_report_id(msg, raw, recipient),
                occurred_at=occurred,
                reporter=_reporter(reporter),
            )
        )
    return reports


def _from_arf(
    msg: Message, raw: bytes, feedback_part: Message, parts: list[Message]
) -> list[BounceReport]:
    """The complaint in an RFC 5965 report; ``[]`` unless its Feedback-Type is abuse or fraud."""
    groups = _field_groups(feedback_part)
    if not groups:
        return []
    fields = groups[0]
    feedback_type = _field(fields, "Feedback-Type").lower()
    feedback_type = feedback_type.split()[0] if feedback_type.split() else ""
    if feedback_type not in _COMPLAINT_TYPES:
        return []
    original = _original_headers(parts)
    candidates = _fields(fields, "Original-Rcpt-To")
    if original is not None:
        candidates += _fields(original, "X-HmXmrOriginalRecipient") + _fields(original, "To")
    recipient = _first_real_address(candidates)
    addresses = _report_addresses(msg, original, _fields(fields, "Original-Mail-From"))
    occurred = (
        _when(_field(fields, "Arrival-Date"))
        or _when(_field(fields, "Received-Date"))
        or _when(_field(msg, "Date"))
    )
    reporter = (
        _field(fields, "User-Agent")
        or _strip_type(_field(fields, "Reporting-MTA"))
        or _from_address(msg)
    )
    return [
        BounceReport(
            kind=EventKind.complained,
            recipient=recipient,
            status="",
            diagnostic=_one_line(feedback_type),
            original_message_id=_original_message_id(original, None, None),
            addresses=addresses,
            report_id=_report_id(msg, raw, recipient),
            occurred_at=occurred,
            reporter=_reporter(reporter),
        )
    ]


def _from_plain(msg: Message, raw: bytes, parts: list[Message]) -> list[BounceReport]:
    """A best-effort report from a bounce without a delivery-status part (old Exim, qmail).

    Only a message that reads like a mail server's bounce counts (its wording, or a
    MAILER-DAEMON sender with a failure subject); a warning that delivery is still being
    retried gives ``[]``. The SMTP reply quoted in the text gives the status, the address
    just before it (or X-Failed-Recipients) the recipient.
    """
    text = _body_text(parts)
    lowered = text.lower()
    subject = _field(msg, "Subject")
    from_address = _from_address(msg)
    from_daemon = bool(_DAEMON_LOCAL.match(from_address.partition("@")[0] if from_address else ""))
    if not any(marker in lowered for marker in _PLAIN_MARKERS) and not (
        from_daemon and _DAEMON_SUBJECT.search(subject)
    ):
        return []
    report_text, original_text = _split_original(text)
    if any(marker in report_text.lower() for marker in _DELAY_MARKERS):
        return []
    original = _parse_headers(original_text) if original_text else _original_headers(parts)
    addresses = _report_addresses(msg, original, [])

    reply = _REPLY_IN_TEXT.search(report_text)
    enhanced = _ENHANCED.search(report_text)
    positions = [m.start() for m in (reply, enhanced) if m is not None]
    at = min(positions) if positions else None
    status = _status_code(enhanced.group(0)) if enhanced else ""
    if not status and reply:
        status = f"{reply.group(1)[0]}.0.0"

    ignored = {a.lower() for a in addresses} | {from_address.lower()}
    failed = _first_real_address(_fields(msg, "X-Failed-Recipients"))
    recipient = failed or _address_near(report_text, at, ignored)
    if at is not None:
        line_start = report_text.rfind("\n", 0, at) + 1
        diagnostic = _paragraph(report_text, line_start)
    elif recipient is not None:
        diagnostic = _paragraph(report_text, report_text.lower().find(recipient.lower()))
    else:
        return []
    kind = classify(status, "failed", diagnostic)
    if kind is None:
        return []
    return [
        BounceReport(
            kind=kind,
            recipient=recipient,
            status=_effective_status(status, diagnostic),
            diagnostic=_one_line(diagnostic),
            original_message_id=_original_message_id(original, None, msg),
            addresses=addresses,
            report_id=_report_id(msg, raw, recipient),
            occurred_at=_when(_field(msg, "Date")),
            reporter=_reporter(from_address),
        )
    ]


# --- message structure --------------------------------------------------------------------------


def _looks_binary(raw: bytes) -> bool:
    """Whether the header block holds NULs or over 1% control bytes (mail headers hold none)."""
    head = raw[:_HEAD_SCAN_BYTES]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end != -1:
            head = head[:end]
            break
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if (byte < 0x20 and byte not in (9, 10, 13)) or byte == 0x7F)
    return controls * 100 > len(head)


def _walk(msg: Message) -> list[Message]:
    """``msg`` and its MIME parts in order, without entering enclosed messages (a returned
    original may itself contain anything) and at most :data:`_MAX_PARTS` of them."""
    found: list[Message] = []
    stack = [msg]
    while stack and len(found) < _MAX_PARTS:
        part = stack.pop()
        found.append(part)
        if part.get_content_maintype() != "multipart":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return found


def _field_groups(part: Message) -> list[Message]:
    """The blank-line separated field groups of a delivery-status or feedback-report part.

    The email package parses ``message/delivery-status`` into one sub-message per group and
    other ``message/*`` types into one sub-message whose body holds the remaining groups; a
    part it left as text is split here.
    """
    payload = part.get_payload()
    groups: list[Message] = []
    if isinstance(payload, list):
        for sub in payload[:_MAX_GROUPS]:
            if not isinstance(sub, Message):
                continue
            groups.append(sub)
            body = sub.get_payload()
            if isinstance(body, str) and body.strip():
                groups.extend(_parse_blocks(body))
    elif isinstance(payload, str):
        groups = _parse_blocks(_text_of(part))
    return [group for group in groups if group.keys()][:_MAX_GROUPS]


def _parse_blocks(text: str) -> list[Message]:
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text[:_TEXT_MAX].strip())
    return [_parse_headers(block) for block in blocks[:_MAX_GROUPS] if block.strip()]


def _parse_headers(text: str) -> Message:
    """The header fields at the start of ``text`` (anything after them is ignored)."""
    return Parser(policy=compat32).parsestr(text[:_TEXT_MAX].lstrip("\r\n"), headersonly=True)


def _original_headers(parts: list[Message]) -> Message | None:
    """The header fields of the returned original (message/rfc822 or text/rfc822-headers)."""
    for part in parts:
        if part.get_content_type() not in _ORIGINAL_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if payload and isinstance(payload[0], Message):
                return payload[0]
            continue
        return _parse_headers(_text_of(part))
    return None


def _text_of(part: Message) -> str:
    """The decoded text of a non-multipart part, at most :data:`_TEXT_MAX` characters."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[: _TEXT_MAX * 4].decode(charset, "replace")[:_TEXT_MAX]
    except (LookupError, ValueError):  # an unknown or broken charset name
        return payload[: _TEXT_MAX * 4].decode("utf-8", "replace")[:_TEXT_MAX]


def _body_text(parts: list[Message]) -> str:
    """The first text/plain part's text (the notice of a plain bounce)."""
    for part in parts:
        if part.get_content_type() == "text/plain":
            return _text_of(part)
    return ""


def _split_original(text: str) -> tuple[str, str]:
    """``text`` cut at the line after which a plain bounce quotes the returned message."""
    match = _COPY_MARKER.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.end() :]


def _paragraph(text: str, start: int) -> str:
    """From ``start`` to the next blank line."""
    start = max(start, 0)
    end = re.search(r"\n[ \t]*\n", text[start:])
    return text[start : start + end.start()] if end else text[start : start + _FIELD_MAX]


# --- header fields ------------------------------------------------------------------------------


def _clean(value: object) -> str:
    """A header value as safe text: undecodable bytes replaced, control characters blanked,
    at most :data:`_FIELD_MAX` characters."""
    text = str(value)[:_FIELD_MAX]
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(" ", text)


def _fields(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), cleaned, folding kept."""
    wanted = name.lower()
    values = [_clean(value) for key, value in msg.raw_items() if key.lower() == wanted]
    return values[:_FIELDS_PER_NAME]


def _field(msg: Message, name: str) -> str:
    """The first value of header ``name`` on one line, or ""."""
    values = _fields(msg, name)
    return " ".join(values[0].split()) if values else ""


def _unfold_reply(text: str) -> str:
    """A multiline SMTP reply without its continuation prefixes: ``550-5.1.1 a 550-5.1.1 b
    550 5.1.1 c`` -> ``550 5.1.1 a b c`` (how Gmail and others quote it in Diagnostic-Code)."""
    match = re.match(r"\s*([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})\s)?", text)
    if match is None:
        return text
    code, status = match.groups()
    # Without an enhanced code only "550-" marks a continuation ("550 " may be prose).
    prefix = re.escape(code) + ("[ -]" + re.escape(status) + r"\s" if status else "-")
    rest = re.sub(r"\s" + prefix, " ", text[match.end() : _FIELD_MAX])
    return f"{code} {status} {rest}" if status else f"{code} {rest}"


def _one_line(text: str) -> str:
    return clip(_CONTROL.sub(" ", text[: _FIELD_MAX * 4]), DIAGNOSTIC_MAX)


def _reporter(text: str) -> str:
    return clip(text, _REPORTER_MAX)


def _strip_type(value: str) -> str:
    """``"dns; mx.example.net"`` -> ``"mx.example.net"`` (RFC 3464 typed values)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _addresses_in(value: str) -> list[str]:
    """The mail addresses in a header value: the ``<...>`` ones, or bare ones when none."""
    value = value[:_FIELD_MAX]
    found = _ANGLE_ADDRESS.findall(value) or _BARE_ADDRESS.findall(value)
    out = []
    for address in found:
        address = address.strip().rstrip(".")
        local, _, domain = address.rpartition("@")
        if local and domain and len(address) <= _ADDRESS_MAX:
            out.append(address)
    return out


def _is_redacted(address: str) -> bool:
    local, _, domain = address.rpartition("@")
    return bool(_REDACTED_LOCAL.fullmatch(local)) or "redacted" in domain.lower()


def _first_real_address(values: Iterable[str]) -> str | None:
    """The first address in ``values`` that is not a redaction placeholder."""
    for value in values:
        for address in _addresses_in(value):
            if not _is_redacted(address):
                return address
    return None


def _dsn_recipient(group: Message) -> str | None:
    """Original-Recipient (what we sent to, before any forwarding) or else Final-Recipient."""
    for name in ("Original-Recipient", "Final-Recipient"):
        kind, semicolon, rest = _field(group, name).partition(";")
        if semicolon and kind.strip().lower() not in {"rfc822", "utf-8"}:
            continue  # an X.400 or other non-mail address
        address = _first_real_address([rest if semicolon else kind])
        if address is not None:
            return address
    return None


def _from_address(msg: Message) -> str:
    found = _addresses_in(_field(msg, "From"))
    return found[0] if found else ""


def _report_addresses(
    msg: Message, original: Message | None, extra: Iterable[str]
) -> tuple[str, ...]:
    """Where our return path may appear: the report's own delivery headers and To, the returned
    original's Return-Path and ``extra`` (ARF Original-Mail-From, X-Postfix-Sender)."""
    values: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        values += _fields(msg, name)
    if original is not None:
        values += _fields(original, "Return-Path")
    values += list(extra)
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        for address in _addresses_in(value):
            if address.lower() not in seen and len(out) < _MAX_ADDRESSES:
                seen.add(address.lower())
                out.append(address)
    return tuple(out)


def _address_near(text: str, at: int | None, ignored: set[str]) -> str | None:
    """The failed address in a plain bounce: the last one before the SMTP reply at ``at``,
    else the first after it, skipping ours and the mail server's own."""
    candidates = []
    for match in _BARE_ADDRESS.finditer(text[:_TEXT_MAX]):
        address = match.group(0).strip().rstrip(".")
        local = address.rpartition("@")[0]
        if address.lower() in ignored or _DAEMON_LOCAL.match(local) or _is_redacted(address):
            continue
        if len(address) <= _ADDRESS_MAX:
            candidates.append((match.start(), address))
    if not candidates:
        return None
    if at is None:
        return candidates[0][1]
    before = [address for start, address in candidates if start < at]
    return before[-1] if before else candidates[0][1]


def _message_id(value: str) -> str | None:
    """The ``<id>`` in a Message-ID-like value (brackets added to a bare one), or None."""
    match = _ANGLE_ID.search(value)
    if match:
        return match.group(0)
    token = value.strip()
    if token and "@" in token and len(token) <= _ID_MAX - 2 and not re.search(r"[\s<>]", token):
        return f"<{token}>"
    return None


def _original_message_id(
    original: Message | None, per_message: Message | None, report: Message | None
) -> str | None:
    """The bounced message's id: the returned original's Message-ID, else the DSN's
    X-Original-Message-ID (Gmail, Exchange), else the report's In-Reply-To (MTAs set it to
    the bounced message)."""
    candidates = []
    if original is not None:
        candidates.append(_field(original, "Message-ID"))
    if per_message is not None:
        candidates.append(_field(per_message, "X-Original-Message-ID"))
    if report is not None:
        candidates.append(_field(report, "In-Reply-To"))
    for value in candidates:
        found = _message_id(value)
        if found is not None:
            return found
    return None


def _report_id(msg: Message, raw: bytes, recipient: str | None) -> str:
    """``<report Message-ID>|<recipient>``; sha256 of the raw bytes stands in for a missing id."""
    message_id = _field(msg, "Message-ID")
    if not message_id or len(message_id) > _ID_MAX:
        message_id = hashlib.sha256(raw).hexdigest()
    return f"{message_id}|{recipient or ''}"


def _when(value: str) -> datetime | None:
    """An RFC 5322 date as an aware UTC datetime; one without a zone (or -0000) is taken as
    UTC. None when absent or unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value[:200])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
