"""“Send me a test”: the edition exactly as one subscriber gets it, to an editor.

The message is built by the same template as the send, for the chosen subscriber (their name
and their links) or the sample reader, addressed to each test address, with "[TEST]" in front
of the subject. It goes through the configured backend and never touches the ledger: no
delivery row, no state change; the audit log records it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlmodel import Session, select

from newsletter.audience.addresses import AddressError, normalize_email
from newsletter.backends import MailBackend, SendResult
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import MessageTemplate, Recipient
from newsletter.errors import NewsletterError
from newsletter.publish.drafting import SAMPLE_RECIPIENT, prepare, signer_for
from newsletter.storage import store
from newsletter.storage.models import Subscriber

#: At most this many test addresses at once: a test, not a send.
MAX_TEST_ADDRESSES = 10


class TestSendError(NewsletterError, ValueError):
    """The test can't be sent as asked; the message names the field."""

    __test__ = False  # not a pytest test class


def send_test(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    to: list[str],
    backend: MailBackend,
    as_subscriber: str | None = None,
    now: float,
) -> list[tuple[str, SendResult]]:
    """Send the test to each address in ``to``; (address, result) for each."""
    addresses = []
    for raw in to:
        try:
            addresses.append(normalize_email(raw)[0])
        except AddressError as exc:
            raise TestSendError(f"to: {raw[:80]!r}: {exc}") from None
    if not addresses or len(addresses) > MAX_TEST_ADDRESSES:
        raise TestSendError(f"to: 1 to {MAX_TEST_ADDRESSES} addresses, got {len(addresses)}")
    who = SAMPLE_RECIPIENT
    if as_subscriber:
        key = as_subscriber.strip().lower()
        person = session.exec(select(Subscriber).where(Subscriber.email_key == key)).first()
        if person is None or person.id is None:
            raise TestSendError(f"as: no subscriber {as_subscriber[:80]!r}")
        who = Recipient(person.id, person.email, person.name)
    edition = store.get_edition(session, edition_id=edition_id)
    rendered, template, _ = prepare(session, edition=edition, settings=settings)
    test = MessageTemplate(
        replace(rendered, subject=f"[TEST] {rendered.subject}"), template.identity
    )
    signer = signer_for(settings)
    messages = [
        _own_identity(test.build(Recipient(who.subscriber_id, address, who.name), signer, now=now))
        for address in addresses
    ]
    if template.dkim is not None:  # signed as sent: after the Message-ID is the test's own
        messages = [replace(m, raw=template.dkim.sign(m.data, now=int(now))) for m in messages]
    with backend:
        results = backend.send_messages(messages)
    return list(zip(addresses, results, strict=True))


def _own_identity(message: OutgoingMessage) -> OutgoingMessage:
    """A test gets its own Message-ID and idempotency key: with the real ones, an email API
    that dedupes by key (Resend) would later drop the subscriber's real message as a repeat
    of the test, and a mailbox that is also on the list would thread them as one."""
    unique = uuid.uuid4().hex
    domain = message.message_id.rsplit("@", 1)[-1].rstrip(">")
    message_id = f"<test.{unique}@{domain}>"
    content = message.content
    if content is not None:
        content = replace(content, headers={**content.headers, "Message-ID": message_id})
    return replace(
        message,
        message_id=message_id,
        raw=message.data.replace(message.message_id.encode(), message_id.encode(), 1),
        key=f"test-{unique}",
        content=content,
    )
