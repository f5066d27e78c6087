"""The value that crosses from personalization into a mail backend: one ready message.

``data`` is the complete RFC 5322 message with CRLF line endings, 7-bit clean (bodies are
quoted-printable, non-ASCII headers RFC 2047-encoded), so any SMTP server accepts it as is.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

CRLF = b"\r\n"


def qp_encode(text: str) -> bytes:
    """``text`` as a quoted-printable body part, with CRLF line ends (RFC 2045).

    Any CR (alone or in CRLF) becomes LF first, and CRLF is put back after encoding, so no
    bare CR or LF ever reaches the wire. This is also how size is measured: Gmail clips what
    arrives, the encoded part, not the decoded HTML.
    """
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def stuff_lines(data: bytes) -> bytes:
    """Every line of ``data`` after the first that starts with a dot gets another (RFC 5321
    4.5.2); the first line is the caller's to judge (it may continue a line before it)."""
    return data.replace(b"\r\n.", b"\r\n..")


def end_data(body: bytes) -> bytes:
    """``body`` with SMTP's end-of-data line (and the line break it needs before it)."""
    return body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n")


def dot_stuffed(data: bytes) -> bytes:
    """A whole message as SMTP's DATA sends it: stuffed, with its end-of-data line."""
    stuffed = stuff_lines(data)
    return end_data(b"." + stuffed if stuffed.startswith(b".") else stuffed)


@dataclass(frozen=True, slots=True)
class MessageContent:
    """The same message as separate fields, for email APIs that take JSON rather than MIME.

    The bodies are produced only when asked for (:meth:`bodies`), so SMTP sends never pay for
    them.
    """

    from_name: str
    from_email: str
    to_name: str | None
    to_email: str
    subject: str
    #: Headers an API must pass through: Message-ID, List-Id, List-Unsubscribe(-Post).
    headers: Mapping[str, str]
    render: Callable[[], tuple[str, str]] = field(repr=False)  # -> (html, text)
    #: (name, address) replies go to, when not the sender; APIs take it as their own field.
    reply_to: tuple[str, str] | None = None

    def bodies(self) -> tuple[str, str]:
        """(html, text) for this recipient, decoded."""
        return self.render()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sender: str  # envelope sender (bare address)
    recipient: str  # envelope recipient (bare address)
    message_id: str  # the Message-ID header value, with angle brackets
    #: The whole message, headers and body: its bytes, or pieces that are those bytes joined
    #: in order. A template's message is pieces (its constant ones shared by every message of
    #: the edition), joined only when :attr:`data` is read: an SMTP send with :attr:`stuffed`
    #: never reads it, so no 53 KB copy per message is made or held.
    raw: bytes | tuple[bytes, ...]
    key: str  # idempotency key, stable for (edition, subscriber)
    content: MessageContent | None = None  # the fields, for JSON email APIs
    #: ``data`` as SMTP's DATA sends it, when the builder made it cheaply (see ``wire``).
    stuffed: Stuffed | None = None

    @property
    def data(self) -> bytes:
        """The whole message as bytes (joined from :attr:`raw`'s pieces at each read: read it
        once)."""
        raw = self.raw
        return raw if isinstance(raw, bytes) else b"".join(raw)

    @property
    def size(self) -> int:
        """``len(data)``, without joining."""
        raw = self.raw
        return len(raw) if isinstance(raw, bytes) else sum(map(len, raw))

    @property
    def wire_parts(self) -> tuple[bytes, ...] | None:
        """``data`` dot-stuffed, with the end-of-data line, as pieces to write in order; None
        when not prepared, or when ``raw`` was replaced after (``dataclasses.replace``: a
        test send's own Message-ID): the stuffed form belongs to the very object it was made
        from, an O(1) check."""
        stuffed = self.stuffed
        return stuffed.parts if stuffed is not None and stuffed.of is self.raw else None

    @property
    def wire(self) -> bytes | None:
        """:attr:`wire_parts` joined (for tests and tools; a send writes the parts)."""
        parts = self.wire_parts
        return None if parts is None else b"".join(parts)


@dataclass(frozen=True, slots=True)
class Stuffed:
    """``parts``: the message ``of`` dot-stuffed for SMTP DATA (RFC 5321 4.5.2), in pieces.

    The pieces are the template's constant parts, stuffed once per edition and shared by every
    message of it, and this recipient's few slot values: a message in flight holds two short
    tuples, not 53 KB copies (two senders per process with 50 messages each held 96-98 MiB
    with a joined copy of the stuffed form, and 5 MiB more with the joined message)."""

    of: bytes | tuple[bytes, ...]
    parts: tuple[bytes, ...]
