"""Amazon SES events delivered through an SNS topic to an HTTPS subscription.

Verification (AWS "Verifying the signatures of Amazon SNS messages"): the body is an SNS
message whose ``Signature`` is RSA (PKCS#1 v1.5) over a canonical string of ``Key\\nValue\\n``
pairs in byte order of the key names: ``Message, MessageId, Subject (if present), Timestamp,
TopicArn, Type`` for a Notification and ``Message, MessageId, SubscribeURL, Timestamp, Token,
TopicArn, Type`` for a (Un)SubscriptionConfirmation. ``SignatureVersion`` 1 hashes with SHA1,
2 with SHA256. The key is the certificate at ``SigningCertURL``, which must be https on
``sns.<region>.amazonaws.com`` (or ``.amazonaws.com.cn``); any other URL is refused before
anything is fetched. ``secret`` is the expected ``TopicArn``: a message from any other topic
is refused (also before fetching), so nobody can point their own topic at the endpoint.

A certificate that cannot be fetched raises :class:`CertificateUnavailable`, not
:class:`WebhookRejected`: it is our outage, not a forgery, and a 5xx makes SNS retry.

Mapping (SES ``notificationType``, or ``eventType`` for configuration-set event publishing):
``Bounce`` with ``bounceType`` ``Permanent`` -> ``bounced_hard``, ``Transient`` or
``Undetermined`` -> ``bounced_soft`` (one event per ``bouncedRecipients`` entry);
``Complaint`` -> ``complained`` (per ``complainedRecipients``); ``Delivery`` -> ``delivered``
(per ``delivery.recipients``); everything else (Send, Reject, DeliveryDelay, Open, Click,
AmazonSnsSubscriptionSucceeded, ...) -> no event. A SubscriptionConfirmation yields no event;
:func:`subscription_confirm_url` returns the URL the web app must GET to confirm.

Event id: ``{SNS MessageId}:{index of the recipient in the SES list}`` (an index, not the
address, keeps the id well under 250 characters). Message id: ``mail.messageId``, the
``MessageId`` SES's send API returned.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.webhooks.base import (
    EventKind,
    ProviderEvent,
    WebhookProvider,
    WebhookRejected,
    as_object,
    from_iso,
    header,
    load_json,
    require_text,
    text,
)

PROVIDER = "ses"
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SNS_CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9A-Za-z]{1,64}\.pem")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SIGNED_KEYS = {
    "Notification": NOTIFICATION_KEYS,
    "SubscriptionConfirmation": CONFIRMATION_KEYS,
    "UnsubscribeConfirmation": CONFIRMATION_KEYS,
}
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_TIMEOUT = 5

CertFetcher = Callable[[str], bytes]


class CertificateUnavailable(Exception):
    """The SNS signing certificate could not be fetched; retry later (answer 5xx)."""


#: New certificates fetched per minute per process, at most. SNS signs with a handful; a
#: review's 40 forged posts with 40 distinct URLs made 40 outbound fetches (5 s each, in the
#: threadpool). Past the cap, new URLs get 503 (SNS retries) until the minute is over.
MAX_NEW_CERTIFICATES_PER_MINUTE = 5
_certificates: dict[str, bytes] = {}
_recent_fetches: deque[float] = deque()
_fetch_lock = threading.Lock()


def clear_certificate_cache() -> None:
    """Forget fetched certificates and the fetch count (tests)."""
    with _fetch_lock:
        _certificates.clear()
        _recent_fetches.clear()


def fetch_certificate(url: str, *, clock: Callable[[], float] = time.monotonic) -> bytes:
    """The PEM at ``url``, fetched once per process (SNS signs with few certificates and
    fetching one per request would make every webhook wait on AWS), and at most
    :data:`MAX_NEW_CERTIFICATES_PER_MINUTE` new ones a minute."""
    with _fetch_lock:
        cached = _certificates.get(url)
        if cached is not None:
            return cached
        now = clock()
        while _recent_fetches and _recent_fetches[0] <= now - 60:
            _recent_fetches.popleft()
        if len(_recent_fetches) >= MAX_NEW_CERTIFICATES_PER_MINUTE:
            raise CertificateUnavailable("too many new SNS certificates this minute")
        _recent_fetches.append(now)
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise CertificateUnavailable(f"SNS certificate fetch failed: {type(exc).__name__}") from exc
    with _fetch_lock:
        if len(_certificates) < 32:
            _certificates[url] = response.content
    return response.content


def is_sns_url(url: str) -> bool:
    """True when ``url`` is https on an SNS host (no credentials, default port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.username is None
        and port in (None, 443)
        and SNS_HOST.fullmatch(parts.hostname or "") is not None
    )


def is_sns_certificate_url(url: str) -> bool:
    """An SNS URL shaped like SNS's signing certificates: nothing else is ever fetched."""
    parts = urlsplit(url)
    return (
        is_sns_url(url)
        and SNS_CERT_PATH.fullmatch(parts.path) is not None
        and not parts.query
        and not parts.fragment
    )


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signed for ``message`` (whose Type is known)."""
    lines = []
    for key in SIGNED_KEYS[message["Type"]]:
        value = message.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise WebhookRejected(f"SNS message has no {key}")
        lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode("utf-8")


def verify(
    headers: Mapping[str, str], message: dict[str, Any], topic_arn: str, fetcher: CertFetcher
) -> None:
    """Refuses ``message`` unless SNS signed it for ``topic_arn``; cheap checks come first so
    a forged request never makes us fetch anything."""
    kind = text(message, "Type")
    if kind not in SIGNED_KEYS:
        raise WebhookRejected("unknown SNS message type")
    announced = header(headers, "x-amz-sns-message-type")
    if announced is not None and announced != kind:
        raise WebhookRejected("SNS message type header does not match body")
    if text(message, "TopicArn") != topic_arn:
        raise WebhookRejected("unexpected SNS TopicArn")
    algorithm = HASHES.get(text(message, "SignatureVersion"))
    if algorithm is None:
        raise WebhookRejected("unsupported SNS SignatureVersion")
    cert_url = text(message, "SigningCertURL")
    if not is_sns_certificate_url(cert_url):
        raise WebhookRejected("SigningCertURL is not an SNS https URL")
    try:
        signature = base64.b64decode(text(message, "Signature"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("SNS signature is not base64") from None
    if len(signature) not in (256, 384, 512):  # RSA 2048, 3072 or 4096 bits
        raise WebhookRejected("SNS signature has the wrong length")
    signed = canonical_string(message)
    try:
        key = x509.load_pem_x509_certificate(fetcher(cert_url)).public_key()
    except ValueError:
        raise WebhookRejected("SNS certificate is unreadable") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected("SNS certificate key is not RSA")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise WebhookRejected("bad SNS signature") from None


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: datetime | None = None,
    cert_fetcher: CertFetcher = fetch_certificate,
) -> list[ProviderEvent]:
    """The events in one SNS request carrying SES notifications (``now`` is unused: SNS
    retries for a long time, so its Timestamp is not checked; ``event_id`` dedupes retries)."""
    return _events(_verified(headers, body, secret, cert_fetcher))


def subscription_confirm_url(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    cert_fetcher: CertFetcher = fetch_certificate,
) -> str | None:
    """The SubscribeURL of a genuine SubscriptionConfirmation for topic ``secret``, which the
    web app GETs to confirm the subscription; None for any other genuine SNS message.

    The URL is checked to be https on an SNS host too, so a GET to it can reach nothing else.
    """
    return _confirm_url(_verified(headers, body, secret, cert_fetcher))


def read(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    cert_fetcher: CertFetcher = fetch_certificate,
) -> tuple[str | None, list[ProviderEvent]]:
    """Both of the above from one verification: (SubscribeURL or None, events)."""
    message = _verified(headers, body, secret, cert_fetcher)
    return _confirm_url(message), _events(message)


def _verified(
    headers: Mapping[str, str], body: bytes, secret: str, cert_fetcher: CertFetcher
) -> dict[str, Any]:
    message = as_object(load_json(body), "SNS message")
    verify(headers, message, secret, cert_fetcher)
    return message


def _confirm_url(message: dict[str, Any]) -> str | None:
    if message["Type"] != "SubscriptionConfirmation":
        return None
    url = text(message, "SubscribeURL")
    if not is_sns_url(url):
        raise WebhookRejected("SubscribeURL is not an SNS https URL")
    return url


def _events(message: dict[str, Any]) -> list[ProviderEvent]:
    if message["Type"] != "Notification":
        return []
    try:
        ses_event = json.loads(message["Message"])
    except ValueError:
        raise WebhookRejected("SNS Message is not JSON") from None
    ses_event = as_object(ses_event, "SES event")
    sns_time = from_iso(message.get("Timestamp"), "SNS Timestamp")
    return ses_events(require_text(message, "MessageId", "SNS message"), ses_event, sns_time)


def ses_events(sns_id: str, event: dict[str, Any], sns_time: datetime) -> list[ProviderEvent]:
    """One :class:`ProviderEvent` per recipient the SES event reports on."""
    event_type = text(event, "notificationType") or text(event, "eventType")
    mail = event.get("mail")
    message_id = (text(mail, "messageId") if isinstance(mail, dict) else "") or None
    found: list[tuple[EventKind, str, str]]  # (kind, email, detail) per recipient
    if event_type == "Bounce":
        report = as_object(event.get("bounce"), "SES bounce")
        bounce_type = text(report, "bounceType")
        kind = EventKind.bounced_hard if bounce_type == "Permanent" else EventKind.bounced_soft
        label = "/".join(part for part in (bounce_type, text(report, "bounceSubType")) if part)
        found = []
        for entry in recipient_list(report, "bouncedRecipients"):
            diagnosis = text(entry, "diagnosticCode") or text(entry, "status")
            detail = ": ".join(part for part in (label, diagnosis) if part)
            found.append((kind, require_text(entry, "emailAddress", "SES bounce"), detail))
    elif event_type == "Complaint":
        report = as_object(event.get("complaint"), "SES complaint")
        parts = (text(report, "complaintFeedbackType"), text(report, "complaintSubType"))
        detail = ": ".join(part for part in parts if part)
        found = [
            (EventKind.complained, require_text(entry, "emailAddress", "SES complaint"), detail)
            for entry in recipient_list(report, "complainedRecipients")
        ]
    elif event_type == "Delivery":
        report = as_object(event.get("delivery"), "SES delivery")
        recipients = report.get("recipients")
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise WebhookRejected("SES delivery has no recipients")
        detail = text(report, "smtpResponse")
        found = [(EventKind.delivered, address.strip(), detail) for address in recipients]
    else:
        return []
    occurred_at = event_time(report, sns_time)
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=f"{sns_id}:{index}",
            kind=kind,
            email=email,
            provider_message_id=message_id,
            occurred_at=occurred_at,
            detail=detail,
        )
        for index, (kind, email, detail) in enumerate(found)
    ]


def recipient_list(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The recipient objects under ``report[key]``; refuses a missing or malformed list."""
    entries = report.get(key)
    if not isinstance(entries, list) or not entries:
        raise WebhookRejected(f"SES event has no {key}")
    return [as_object(entry, f"SES {key} entry") for entry in entries]


def event_time(report: dict[str, Any], sns_time: datetime) -> datetime:
    """When SES saw the bounce, complaint or delivery; SNS's publish time if SES omits it."""
    if report.get("timestamp") is None:
        return sns_time
    return from_iso(report.get("timestamp"), "SES timestamp")


#: The ``newsletter.webhooks`` entry point (see ``pyproject.toml``).
webhook = WebhookProvider(PROVIDER, parse, "NEWSLETTER_WEBHOOK_SES")
