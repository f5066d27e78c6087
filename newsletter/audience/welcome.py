"""The welcome email a person gets once they confirm: what they signed up for, the latest
edition's web version, and how to leave.

Sent once per confirmation that activated something (confirming twice sends nothing), after
the confirmation page has answered. It carries the same one-click ``List-Unsubscribe`` as an
edition, signed for the newsletter they joined, so leaving is as easy from here as from any
edition.
"""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.rendering import make_environment
from newsletter.edition.tokens import TokenSigner
from newsletter.sending.notice import build_notice
from newsletter.storage.models import Newsletter, Subscriber


def build_welcome(
    settings: Settings,
    signer: TokenSigner,
    subscriber: Subscriber,
    newsletter: Newsletter,
    latest_url: str | None,
) -> OutgoingMessage:
    """The welcome message for ``subscriber`` joining ``newsletter``; ``latest_url`` is the
    web version of the latest sent edition, if there is one."""
    assert subscriber.id is not None and newsletter.id is not None
    token = signer.unsubscribe(
        subscriber_id=subscriber.id, newsletter_id=newsletter.id, edition_id=None
    )
    manage_url = f"{settings.base_url}/u/{token}"
    env = make_environment()
    values = {
        "name": newsletter.name,
        "latest_url": latest_url,
        "archive_url": f"{settings.base_url}/archive",
        "manage_url": manage_url,
        "postal_address": settings.postal_address,
    }
    return build_notice(
        sender=settings.sender(),
        to=subscriber.email,
        subject=f"Welcome to {newsletter.name}",
        text=env.get_template("welcome.txt.j2").render(values),
        html_body=env.get_template("welcome.html.j2").render(values),
        key=f"welcome-s{subscriber.id}-n{newsletter.id}",
        kind="welcome",
        headers={
            "List-Unsubscribe": f"<{manage_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
