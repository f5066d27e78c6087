"""Resend webhooks, delivered and signed by Svix: one JSON object per request.

Verification (Svix): ``svix-signature`` holds one or more space-separated ``v1,<base64>``
entries, each an HMAC-SHA256 of ``f"{svix-id}.{svix-timestamp}.{body}"`` keyed by the
base64-decoded part of ``secret`` after ``whsec_``; one matching entry is enough (Svix sends
several while a secret is rotated). A timestamp more than 5 minutes from ``now`` is refused,
as Svix's own libraries do, so a captured request cannot be replayed.

Mapping (``type``): ``email.bounced`` with ``data.bounce.type`` ``Permanent`` (or no type:
Resend documents the event as a permanent rejection) -> ``bounced_hard``, any other type
(``Transient``, ``Undetermined``) -> ``bounced_soft``; ``email.complained`` -> ``complained``;
``email.delivered`` -> ``delivered``; everything else (sent, delivery_delayed, opened,
clicked, ...) -> no event.

One event per address in ``data.to`` (a ``Name <addr>`` entry gives ``addr``). Event id: the
``svix-id`` header (the same on every retry of the message); when ``data.to`` lists several
addresses, ``{svix-id}:{index}``.
Message id: ``data.email_id``, the ``id`` Resend's send API returned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from newsletter.webhooks.base import (
    EventKind,
    ProviderEvent,
    WebhookProvider,
    WebhookRejected,
    as_object,
    check_fresh,
    from_iso,
    load_json,
    require_header,
    resolve_now,
    text,
)

PROVIDER = "resend"
MAX_SKEW = timedelta(minutes=5)
SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret; a malformed secret is a setup error."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the Resend signing secret is not whsec_<base64>") from exc
    if not key:
        raise ValueError("the Resend signing secret is empty")
    return key


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: datetime) -> str:
    """The ``svix-id`` of a request Svix signed recently with ``secret``; refuses any other."""
    svix_id = require_header(headers, "svix-id")
    timestamp = require_header(headers, "svix-timestamp")
    signatures = require_header(headers, "svix-signature")
    key = signing_key(secret)
    check_fresh(timestamp, now, MAX_SKEW, "svix-timestamp")
    signed = f"{svix_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value.encode("ascii", "replace")):
            return svix_id
    raise WebhookRejected("bad Svix signature")


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """The events in one Resend webhook request."""
    svix_id = verify(headers, body, secret, resolve_now(now))
    payload = as_object(load_json(body), "Resend body")
    data = as_object(payload.get("data"), "Resend data")
    kind, detail = classify(text(payload, "type"), data)
    if kind is None:
        return []
    recipients = data.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list) or not recipients:
        raise WebhookRejected("Resend event has no recipient")
    if not all(isinstance(address, str) and address.strip() for address in recipients):
        raise WebhookRejected("Resend recipient is not an address")
    occurred_at = from_iso(payload.get("created_at"), "Resend created_at")
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=svix_id if len(recipients) == 1 else f"{svix_id}:{index}",
            kind=kind,
            email=parseaddr(address)[1] or address.strip(),
            provider_message_id=text(data, "email_id") or None,
            occurred_at=occurred_at,
            detail=detail,
        )
        for index, address in enumerate(recipients)
    ]


def classify(event_type: str, data: dict[str, Any]) -> tuple[EventKind | None, str]:
    """The kind and detail text of a Resend event type; kind None when it is ignored."""
    if event_type == "email.bounced":
        bounce = data.get("bounce")
        bounce = bounce if isinstance(bounce, dict) else {}
        bounce_type = text(bounce, "type")
        hard = bounce_type in ("", "Permanent")
        kind = EventKind.bounced_hard if hard else EventKind.bounced_soft
        parts = (bounce_type, text(bounce, "subType"), text(bounce, "message"))
        return kind, ": ".join(part for part in parts if part)
    if event_type == "email.complained":
        return EventKind.complained, ""
    if event_type == "email.delivered":
        return EventKind.delivered, ""
    return None, ""


#: The ``newsletter.webhooks`` entry point (see ``pyproject.toml``).
webhook = WebhookProvider(PROVIDER, parse, "NEWSLETTER_WEBHOOK_RESEND")
