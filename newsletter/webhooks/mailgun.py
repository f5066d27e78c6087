"""Mailgun webhooks: one JSON object per request, ``{"signature": {...}, "event-data": {...}}``.

Verification (Mailgun's "Securing webhooks"): ``signature.signature`` is the hex
HMAC-SHA256 of ``signature.timestamp + signature.token`` keyed by the HTTP webhook signing
key (``secret``; not the API key). The signature is in the body, not a header, and does not
cover ``event-data``; it proves the request came from Mailgun, and the 10-minute freshness
check on its timestamp keeps a captured request from being replayed later.

Mapping (``event-data.event``): ``failed`` with ``severity`` ``permanent`` ->
``bounced_hard``, with ``temporary`` -> ``bounced_soft`` (Mailgun retries those and may send
one per attempt; each has its own id); ``complained`` -> ``complained``; ``delivered`` ->
``delivered``; everything else (accepted, opened, clicked, unsubscribed, ...) -> no event.

Event id: ``event-data.id``. Message id: ``event-data.message.headers.message-id``, stored
WITHOUT angle brackets (Mailgun's send API answers ``"<id>"``; the webhook carries ``id``), so
a caller matching against a stored send id must strip ``<`` and ``>`` from that one too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

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
    require_text,
    resolve_now,
    text,
)

PROVIDER = "mailgun"
MAX_SKEW = timedelta(minutes=10)


def verify(payload: dict[str, Any], secret: str, now: datetime) -> None:
    """Refuses the request unless its signature block was made recently with ``secret``."""
    block = payload.get("signature")
    if not isinstance(block, dict):
        raise WebhookRejected("missing Mailgun signature")
    timestamp = text(block, "timestamp")
    token = text(block, "token")
    signature = text(block, "signature")
    if not (timestamp and token and signature):
        raise WebhookRejected("incomplete Mailgun signature")
    check_fresh(timestamp, now, MAX_SKEW, "Mailgun timestamp")
    expected = hmac.new(
        secret.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise WebhookRejected("bad Mailgun signature")


def signature_token(body: bytes) -> str:
    """The signature token of a request :func:`parse` accepted: it may be used only once
    within :data:`MAX_SKEW` (the caller remembers it; see ``store.accept_nonce``)."""
    payload = as_object(load_json(body), "Mailgun body")
    block = payload.get("signature")
    return text(block, "token") if isinstance(block, dict) else ""


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """The event in one Mailgun webhook request (``headers`` are unused: Mailgun signs the
    body's own signature block)."""
    payload = as_object(load_json(body), "Mailgun body")
    verify(payload, secret, resolve_now(now))
    data = as_object(payload.get("event-data"), "Mailgun event-data")
    kind = event_kind(data)
    if kind is None:
        return []
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=text(data, "id") or content_hash(data),
            kind=kind,
            email=require_text(data, "recipient", "Mailgun event"),
            provider_message_id=message_id(data),
            occurred_at=from_unix(data.get("timestamp"), "Mailgun event timestamp"),
            detail=detail(data),
        )
    ]


def event_kind(data: dict[str, Any]) -> EventKind | None:
    """The kind of one Mailgun event, or None when the engine does not act on it."""
    name = text(data, "event")
    if name == "failed":
        severity = text(data, "severity")
        if severity == "permanent":
            return EventKind.bounced_hard
        if severity == "temporary":
            return EventKind.bounced_soft
        return None
    if name == "complained":
        return EventKind.complained
    if name == "delivered":
        return EventKind.delivered
    return None


def message_id(data: dict[str, Any]) -> str | None:
    """The Message-ID Mailgun assigned, without angle brackets, or None."""
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    if not isinstance(headers, dict):
        return None
    return text(headers, "message-id").strip("<>").strip() or None


def detail(data: dict[str, Any]) -> str:
    """Severity, reason and the receiving server's answer, as far as Mailgun gives them."""
    status = data.get("delivery-status")
    answer = ""
    if isinstance(status, dict):
        code = text(status, "code")
        message = text(status, "message") or text(status, "description")
        answer = " ".join(part for part in (code, message) if part)
    parts = (text(data, "severity"), text(data, "reason"), answer)
    return ": ".join(part for part in parts if part)


#: The ``newsletter.webhooks`` entry point (see ``pyproject.toml``).
webhook = WebhookProvider(
    PROVIDER, parse, "NEWSLETTER_WEBHOOK_MAILGUN", replay_token=signature_token
)
