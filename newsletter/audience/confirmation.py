"""The double opt-in email: one message with a signed confirm link, sent through the backend.

Built with the standard library's ``EmailMessage`` (SMTP policy: CRLF, RFC 2047 names): it is
one message per signup, so the edition's prepared-once MIME machinery would buy nothing. The
link opens a page with a Confirm button; following the link alone changes nothing, because
mail scanners fetch every link in a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.rendering import make_environment
from newsletter.edition.tokens import BadToken, TokenSigner
from newsletter.sending.notice import build_notice
from newsletter.storage.models import Newsletter, Subscriber, utcnow

#: A confirmation link works for this long; then the person simply subscribes again.
CONFIRM_TTL = timedelta(days=7)


def confirm_token(signer: TokenSigner, subscriber_id: int, *, now: datetime | None = None) -> str:
    """A "c" token; its last field is the minute it was issued (signed, so it can't be moved)."""
    issued = int((now or utcnow()).timestamp() // 60)
    return signer.sign("c", subscriber_id=subscriber_id, newsletter_id=0, edition_id=issued)


def confirmed_subscriber(
    signer: TokenSigner, token: str, *, now: datetime | None = None
) -> int | None:
    """The subscriber id of a genuine, unexpired confirm token; None for anything else."""
    try:
        claims = signer.verify(token, purpose="c")
    except BadToken:
        return None
    if claims.edition_id is None:
        return None
    age = (now or utcnow()) - datetime.fromtimestamp(claims.edition_id * 60, UTC)
    if age > CONFIRM_TTL or age < -timedelta(minutes=5):
        return None
    return claims.subscriber_id


def confirm_url(settings: Settings, signer: TokenSigner, subscriber_id: int) -> str:
    return f"{settings.base_url}/confirm/{confirm_token(signer, subscriber_id)}"


def build_confirmation(
    settings: Settings,
    signer: TokenSigner,
    subscriber: Subscriber,
    newsletters: Sequence[Newsletter],
) -> OutgoingMessage:
    """The confirmation message for ``subscriber``, naming the lists they asked for."""
    assert subscriber.id is not None
    names = [n.name for n in newsletters] or [settings.newsletter_name]
    url = confirm_url(settings, signer, subscriber.id)
    env = make_environment()
    values = {
        "names": names,
        "url": url,
        # Not the name typed into the form: anyone can type anything there, and this email
        # goes to an address that has not agreed to anything yet.
        "greeting": "there",
        "postal_address": settings.postal_address,
    }
    return build_notice(
        sender=settings.sender(),
        to=subscriber.email,
        subject=f"Confirm your subscription to {names[0]}",
        text=env.get_template("confirm.txt.j2").render(values),
        html_body=env.get_template("confirm.html.j2").render(values),
        key=f"confirm-s{subscriber.id}",
        kind="confirm",
    )
