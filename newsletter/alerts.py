"""Mail to the people who run the newsletter (not to subscribers): approval requests.

Plain text, built with the standard library (SMTP policy), sent through the configured
backend like every other message.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from newsletter.config import Settings
from newsletter.message import MessageContent, OutgoingMessage
from newsletter.models import Edition, Newsletter
from newsletter.personalization import format_address


def build_approval_alert(
    settings: Settings, newsletter: Newsletter, edition: Edition, editors: Sequence[str]
) -> list[OutgoingMessage]:
    """One message per editor: what waits, when it was due, and the two commands to act."""
    sender = settings.sender()
    due = f"{edition.scheduled_for:%a %d %b %Y %H:%M} UTC" if edition.scheduled_for else "now"
    subject = f"Approval needed: {newsletter.name} ({edition.period_key})"
    text = (
        f"The {newsletter.name} edition for {edition.period_key} is ready and waits for an "
        f"editor's approval. It was due {due}; nothing goes out until it is approved.\n\n"
        f"Subject: {edition.subject}\n\n"
        f"Preview:  newsletter edition preview {edition.id}\n"
        f"Approve:  newsletter edition approve {edition.id} --by YOUR-NAME\n\n"
        "Once approved, the scheduler sends it within a minute.\n"
    )
    messages = []
    for editor in editors:
        message_id = make_msgid("approval", domain=sender.domain or "localhost")
        msg = EmailMessage(policy=SMTP)
        msg["From"] = format_address(sender.display_name or None, sender.addr_spec)
        msg["To"] = format_address(None, editor)
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = message_id
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        messages.append(
            OutgoingMessage(
                sender=sender.addr_spec,
                recipient=editor,
                message_id=message_id,
                data=msg.as_bytes(),
                key=f"approval-e{edition.id}-{editor}",
                content=MessageContent(
                    from_name=sender.display_name,
                    from_email=sender.addr_spec,
                    to_name=None,
                    to_email=editor,
                    subject=subject,
                    headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
                    render=lambda: ("<pre>" + html.escape(text) + "</pre>", text),
                ),
            )
        )
    return messages
