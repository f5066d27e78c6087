"""Mail to the people who run the newsletter (not to subscribers): approval requests.

Plain text, built with the standard library (SMTP policy), sent through the configured
backend like every other message.
"""

from __future__ import annotations

from collections.abc import Sequence

from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.sending.notice import build_notice
from newsletter.storage.models import Edition, Newsletter


def build_approval_alert(
    settings: Settings,
    newsletter: Newsletter,
    edition: Edition,
    editors: Sequence[str],
    size_note: str | None = None,
) -> list[OutgoingMessage]:
    """One message per editor: what waits, when it was due, the console page to act on it
    (and the two commands, for a shell);
    ``size_note`` when cards were made compact for Gmail's clip (or nothing could avoid it)."""
    sender = settings.sender()
    due = f"{edition.scheduled_for:%a %d %b %Y %H:%M} UTC" if edition.scheduled_for else "now"
    subject = f"Approval needed: {newsletter.name} ({edition.period_key})"
    text = (
        f"The {newsletter.name} edition for {edition.period_key} is ready and waits for an "
        f"editor's approval. It was due {due}; nothing goes out until it is approved.\n\n"
        f"Subject: {edition.subject}\n\n"
        + (f"Size: {size_note}.\n\n" if size_note else "")
        + "Open it in the console to preview, test and approve it:\n"
        f"{settings.base_url.rstrip('/')}/console/editions/{edition.id}\n\n"
        f"Or from a shell: newsletter edition preview {edition.id} --out preview.html, then\n"
        f"newsletter edition approve {edition.id} --by YOUR-NAME\n\n"
        "Once approved, the scheduler sends it within a minute.\n"
    )
    return [
        build_notice(
            sender=sender,
            to=editor,
            subject=subject,
            text=text,
            key=f"approval-e{edition.id}-{editor}",
            kind="approval",
        )
        for editor in editors
    ]


def build_breaker_alert(
    settings: Settings,
    newsletter: Newsletter,
    edition: Edition,
    reason: str,
    to: Sequence[str],
) -> list[OutgoingMessage]:
    """One message per address: the send paused itself, why, and what to do next."""
    sender = settings.sender()
    subject = f"Send paused: {newsletter.name} ({edition.period_key}), complaints or bounces"
    text = (
        f"The {newsletter.name} edition for {edition.period_key} ({edition.subject}) stopped "
        f"sending by itself:\n\n{reason}\n\n"
        "Mailbox providers throttle or block a sender whose complaint rate passes 0.3% or "
        "whose bounces show a stale list. Nothing more goes out until an operator resumes it.\n\n"
        "Look at the reports first:\n"
        f"{settings.base_url.rstrip('/')}/console/editions/{edition.id}\n"
        f"newsletter edition status {edition.id}   and   newsletter stats\n\n"
        "If the cause is understood (an old segment imported by mistake, say), resume with\n"
        f"newsletter edition resume {edition.id}\n"
        "or cancel it with\n"
        f"newsletter edition cancel {edition.id}\n"
    )
    return [
        build_notice(
            sender=sender,
            to=address,
            subject=subject,
            text=text,
            key=f"breaker-e{edition.id}-{address}",
            kind="breaker",
        )
        for address in to
    ]
