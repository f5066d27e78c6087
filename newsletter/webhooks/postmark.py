"""Postmark webhooks: Bounce, SpamComplaint and Delivery records, one JSON object per request.

Postmark does not sign webhooks; it recommends HTTP Basic auth on the webhook URL
(``https://user:password@host/...``). ``secret`` is that ``user:password`` pair and the
``Authorization: Basic`` header must carry exactly it (compared in constant time).

Mapping (``RecordType`` / bounce ``Type``, after Postmark's bounce type list):

- ``Bounce`` with a hard type (``HardBounce``, ``BadEmailAddress``, ``ManuallyDeactivated``:
  the address is bad or Postmark will refuse it from now on) -> ``bounced_hard``;
- ``Bounce`` with a soft type (``SoftBounce``, ``Transient``, ``DnsError``, ``Blocked``,
  ``SpamNotification``, ``DMARCPolicy``, ``Unknown``: the message was refused for a reason
  that may pass, or that is about the sender rather than the address) -> ``bounced_soft``;
- ``Bounce`` of type ``SpamComplaint`` and ``RecordType`` ``SpamComplaint`` -> ``complained``;
- ``Delivery`` -> ``delivered``;
- every other record (Open, Click, SubscriptionChange) and bounce type (AutoResponder,
  AddressChange, Subscribe, Unsubscribe, ChallengeVerification, VirusNotification,
  OpenRelayTest, Unconfirmed, SMTPApiError, InboundError, TemplateRenderingFailed: replies
  and notices, not failures of delivery) -> no event.

Event id: the record's ``ID`` (bounces and complaints have one); Delivery records have none,
so their id is the sha256 of the record's canonical JSON.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from newsletter.webhooks.base import (
    EventKind,
    ProviderEvent,
    WebhookProvider,
    WebhookRejected,
    as_object,
    content_hash,
    from_iso,
    header,
    load_json,
    require_text,
    text,
)

PROVIDER = "postmark"

HARD_BOUNCE_TYPES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
SOFT_BOUNCE_TYPES = frozenset(
    {"SoftBounce", "Transient", "DnsError", "Blocked", "SpamNotification", "DMARCPolicy", "Unknown"}
)


def check_basic_auth(headers: Mapping[str, str], secret: str) -> None:
    """Refuses the request unless its Basic credentials equal ``secret`` (``user:password``)."""
    if ":" not in secret:
        raise ValueError("the Postmark webhook secret must be 'user:password'")
    value = header(headers, "Authorization")
    if not value:
        raise WebhookRejected("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise WebhookRejected("Authorization is not Basic")
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("Authorization is not valid base64") from None
    if not hmac.compare_digest(given, secret.encode("utf-8")):
        raise WebhookRejected("wrong webhook credentials")


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """The events in one Postmark webhook request (``now`` is unused: nothing is timed)."""
    check_basic_auth(headers, secret)
    record = as_object(load_json(body), "Postmark record")
    record_type = text(record, "RecordType")
    if record_type == "Bounce":
        kind = bounce_kind(text(record, "Type"))
        if kind is None:
            return []
        return [bounce_event(record, kind)]
    if record_type == "SpamComplaint":
        return [bounce_event(record, EventKind.complained)]
    if record_type == "Delivery":
        return [delivery_event(record)]
    return []


def bounce_kind(bounce_type: str) -> EventKind | None:
    """The kind for a Postmark bounce ``Type``, or None for types that are not failures."""
    if bounce_type in HARD_BOUNCE_TYPES:
        return EventKind.bounced_hard
    if bounce_type in SOFT_BOUNCE_TYPES:
        return EventKind.bounced_soft
    if bounce_type == "SpamComplaint":
        return EventKind.complained
    return None


def bounce_event(record: dict[str, Any], kind: EventKind) -> ProviderEvent:
    """A Bounce or SpamComplaint record (same shape) as an event."""
    detail = ": ".join(
        part for part in (text(record, "Type"), text(record, "Details")) if part
    ) or text(record, "Description")
    return ProviderEvent(
        provider=PROVIDER,
        event_id=text(record, "ID") or content_hash(record),
        kind=kind,
        email=require_text(record, "Email", "Postmark bounce"),
        provider_message_id=text(record, "MessageID") or None,
        occurred_at=from_iso(record.get("BouncedAt"), "BouncedAt"),
        detail=detail,
    )


def delivery_event(record: dict[str, Any]) -> ProviderEvent:
    """A Delivery record as an event."""
    return ProviderEvent(
        provider=PROVIDER,
        event_id=text(record, "ID") or content_hash(record),
        kind=EventKind.delivered,
        email=require_text(record, "Recipient", "Postmark delivery"),
        provider_message_id=text(record, "MessageID") or None,
        occurred_at=from_iso(record.get("DeliveredAt"), "DeliveredAt"),
        detail=text(record, "Details"),
    )


#: The ``newsletter.webhooks`` entry point (see ``pyproject.toml``).
webhook = WebhookProvider(PROVIDER, parse, "NEWSLETTER_WEBHOOK_POSTMARK")
