"""One-off messages (a signup confirmation, an approval request), built the same way.

Not editions: one message per event, so the edition's prepared-once MIME machinery would buy
nothing. The standard library's ``EmailMessage`` with the SMTP policy (CRLF, RFC 2047 names),
quoted-printable bodies, ``Auto-Submitted: auto-generated`` (RFC 3834, so auto-responders stay
quiet), and the fields for email APIs alongside.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from newsletter.edition.message import MessageContent, OutgoingMessage
from newsletter.edition.personalization import format_address


def build_notice(
    *,
    sender: Address,
    to: str,
    subject: str,
    text: str,
    html_body: str | None = None,
    key: str,
    kind: str,
    now: datetime | None = None,
    headers: Mapping[str, str] | None = None,
) -> OutgoingMessage:
    """A message to ``to`` (no display name: the address is all we trust). Without
    ``html_body`` the HTML part is the text in a ``<pre>`` for APIs that want one."""
    message_id = make_msgid(kind, domain=sender.domain or "localhost")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = format_address(sender.display_name or None, sender.addr_spec)
    msg["To"] = format_address(None, to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))  # RFC 5322: numeric zone
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text, cte="quoted-printable")
    if html_body is not None:
        msg.add_alternative(html_body, subtype="html", cte="quoted-printable")
    page = html_body if html_body is not None else f"<pre>{html.escape(text)}</pre>"
    return OutgoingMessage(
        sender=sender.addr_spec,
        recipient=to,
        message_id=message_id,
        raw=msg.as_bytes(),
        key=key,
        content=MessageContent(
            from_name=sender.display_name,
            from_email=sender.addr_spec,
            to_name=None,
            to_email=to,
            subject=subject,
            headers={
                "Message-ID": message_id,
                "Auto-Submitted": "auto-generated",
                **(headers or {}),
            },
            render=lambda: (page, text),
        ),
    )
