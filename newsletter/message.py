"""The value that crosses from personalization into a mail backend: one ready message.

``data`` is the complete RFC 5322 message with CRLF line endings, 7-bit clean (bodies are
quoted-printable, non-ASCII headers RFC 2047-encoded), so any SMTP server accepts it as is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sender: str  # envelope sender (bare address)
    recipient: str  # envelope recipient (bare address)
    message_id: str  # the Message-ID header value, with angle brackets
    data: bytes  # the whole message, headers and body
    key: str  # idempotency key, stable for (edition, subscriber)
