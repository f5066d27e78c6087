"""SendGrid Event Webhook: a signed JSON array of events per request.

Verification (SendGrid's "Signed Event Webhook"): ECDSA P-256 with SHA-256 over the
``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body; the signature is
base64 DER in ``X-Twilio-Email-Event-Webhook-Signature``. ``secret`` is the verification key
exactly as SendGrid shows it (base64 DER SubjectPublicKeyInfo, with or without PEM armour).
A timestamp more than 10 minutes from ``now`` is refused, so a captured request cannot be
replayed later.

Mapping: ``bounce`` with ``type`` ``bounce`` (SendGrid: a permanent denial) ->
``bounced_hard``; with ``type`` ``blocked`` (a temporary denial) -> ``bounced_soft``;
``spamreport`` -> ``complained``; ``delivered`` -> ``delivered``; everything else
(processed, deferred, dropped, open, click, unsubscribes, account events) -> no event.
``bounce_classification`` (newer payloads) goes into ``detail``.

Event id: ``sg_event_id``. Message id: ``sg_message_id`` up to the first ".", which is the
``X-Message-Id`` SendGrid's send API returned; SendGrid omits it on asynchronous bounces.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter.webhooks.base import (
    EventKind,
    ProviderEvent,
    WebhookProvider,
    WebhookRejected,
    as_object,
    check_fresh,
    content_hash,
    from_unix,
    load_json,
    require_header,
    require_text,
    resolve_now,
    text,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_SKEW = timedelta(minutes=10)


def load_public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER text; a bad key is a setup error."""
    lines = [ln for ln in secret.strip().splitlines() if not ln.startswith("-----")]
    try:
        key = load_der_public_key(base64.b64decode("".join(lines), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the SendGrid verification key is not base64 DER") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key is not an elliptic-curve key")
    return key


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: datetime) -> None:
    """Refuses the request unless SendGrid's key signed this timestamp and body, recently."""
    signature_b64 = require_header(headers, SIGNATURE_HEADER)
    timestamp = require_header(headers, TIMESTAMP_HEADER)
    key = load_public_key(secret)
    check_fresh(timestamp, now, MAX_SKEW, "SendGrid timestamp")
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        key.verify(signature, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise WebhookRejected("bad SendGrid signature") from None


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """The events in one SendGrid Event Webhook request, in the order SendGrid sent them."""
    verify(headers, body, secret, resolve_now(now))
    batch = load_json(body)
    if not isinstance(batch, list):
        raise WebhookRejected("SendGrid body is not a JSON array")
    events = []
    for item in batch:
        event = to_event(as_object(item, "SendGrid event"))
        if event is not None:
            events.append(event)
    return events


def event_kind(event: dict[str, Any]) -> EventKind | None:
    """The kind of one SendGrid event, or None when the engine does not act on it."""
    name = text(event, "event")
    if name == "bounce":
        blocked = text(event, "type") == "blocked"  # SendGrid: temporary denial
        return EventKind.bounced_soft if blocked else EventKind.bounced_hard
    if name == "spamreport":
        return EventKind.complained
    if name == "delivered":
        return EventKind.delivered
    return None


def to_event(event: dict[str, Any]) -> ProviderEvent | None:
    """One SendGrid event as a :class:`ProviderEvent`, or None when it is ignored."""
    kind = event_kind(event)
    if kind is None:
        return None
    message_id = text(event, "sg_message_id").partition(".")[0]
    detail_parts = [text(event, "bounce_classification"), text(event, "status")]
    detail_parts.append(text(event, "reason") or text(event, "response"))
    return ProviderEvent(
        provider=PROVIDER,
        event_id=text(event, "sg_event_id") or content_hash(event),
        kind=kind,
        email=require_text(event, "email", "SendGrid event"),
        provider_message_id=message_id or None,
        occurred_at=from_unix(event.get("timestamp"), "SendGrid event timestamp"),
        detail=": ".join(part for part in detail_parts if part),
    )


#: The ``newsletter.webhooks`` entry point (see ``pyproject.toml``).
webhook = WebhookProvider(PROVIDER, parse, "NEWSLETTER_WEBHOOK_SENDGRID")
