"""Webhook verification and parsing for Postmark, SendGrid, Mailgun, Amazon SES (SNS), Resend.

The payloads in tests/fixtures/webhooks/<provider>/ are the providers' documented examples
(Postmark webhook pages, SendGrid's Event Webhook reference, Mailgun's webhook payloads, the
SES notification examples in SNS envelopes, Resend's event pages), with distinct ids per file
and, for Mailgun, our sending domain. Signatures are made here the way each provider documents
it, with keys generated in the test (ECDSA P-256 for SendGrid, an RSA key and self-signed
certificate for SNS) or known secrets (Svix for Resend); the Mailgun files carry signatures
made with ``MAILGUN_KEY``. Postmark does not sign; it is checked through HTTP Basic auth.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.storage.models import MailEventKind
from newsletter.webhooks import (
    EventKind,
    ProviderEvent,
    WebhookRejected,
    mailgun,
    postmark,
    resend,
    sendgrid,
    ses,
)
from newsletter.webhooks.registry import providers
from newsletter.webhooks.ses import subscription_confirm_url

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def tamper(body: bytes, old: bytes, new: bytes) -> bytes:
    """``body`` with one byte changed: ``old`` (found once) replaced by ``new``."""
    assert body.count(old) == 1 and len(old) == len(new)
    changed = body.replace(old, new)
    assert sum(a != b for a, b in zip(body, changed, strict=True)) == 1
    return changed


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the contract -------------------------------------------------------------------------


def test_event_kinds_equal_the_stored_mail_event_kinds() -> None:
    assert [k.value for k in EventKind] == [k.value for k in MailEventKind]


def test_registry_names_every_provider_parse() -> None:
    found = providers()
    assert {name: p.parse for name, p in found.items()} == {
        "postmark": postmark.parse,
        "sendgrid": sendgrid.parse,
        "mailgun": mailgun.parse,
        "ses": ses.parse,
        "resend": resend.parse,
    }
    for name, hook in found.items():
        assert hook.name == name and hook.secret_variable == f"NEWSLETTER_WEBHOOK_{name.upper()}"
    assert found["mailgun"].replay_token is mailgun.signature_token


def test_provider_event_normalizes_time_to_utc_and_clips_detail() -> None:
    event = ProviderEvent(
        provider="postmark",
        event_id="1",
        kind=EventKind.bounced_hard,
        email="a@example.com",
        provider_message_id=None,
        occurred_at=datetime(2026, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
        detail="x" * 600,
    )
    assert event.occurred_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert len(event.detail) == 500 and event.detail.endswith("…")
    with pytest.raises(ValueError, match="timezone-aware"):
        dataclasses.replace(event, occurred_at=datetime(2026, 1, 1))


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "resend"])  # the ones that check time
def test_a_naive_now_is_a_caller_error(provider: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        providers()[provider].parse({}, b"{}", secret="whsec_c2VjcmV0", now=datetime(2026, 1, 1))


# --- Postmark -----------------------------------------------------------------------------

POSTMARK_AUTH = "hooks:correct-horse-battery"


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


POSTMARK_CASES = {
    "bounce-hard.json": ProviderEvent(
        provider="postmark",
        event_id="4323372036854775807",
        kind=EventKind.bounced_hard,
        email="john@example.com",
        provider_message_id="883953f4-6105-42a2-a16a-77a8eac79483",
        occurred_at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
        detail="HardBounce: smtp;550 5.1.1 The email account that you tried to reach does not "
        "exist.",
    ),
    "bounce-soft.json": ProviderEvent(
        provider="postmark",
        event_id="4323372036854775808",
        kind=EventKind.bounced_soft,
        email="mary@example.com",
        provider_message_id="0f3a9a53-3b2c-4c43-9b2e-3f4a2c1e7d10",
        occurred_at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),  # -05:00 in the body
        detail="SoftBounce: smtp;452 4.2.2 The email account that you tried to reach is over "
        "quota.",
    ),
    "spam-complaint.json": ProviderEvent(
        provider="postmark",
        event_id="42",
        kind=EventKind.complained,
        email="jane@example.com",
        provider_message_id="2706ee8a-737c-4285-b032-ccd317af53ed",
        occurred_at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
        detail="SpamComplaint: Test spam complaint details",
    ),
    "delivery.json": ProviderEvent(
        provider="postmark",
        # Delivery records carry no ID: sha256 of the record's canonical JSON, pinned here so
        # a change of canonical form (which would break dedupe of retries) fails this test.
        event_id="69a127314afc9a4b4a931f1fd9c067584c3989ee1ea7f6ced89d0ecea5fe256a",
        kind=EventKind.delivered,
        email="john@example.com",
        provider_message_id="00000000-0000-0000-0000-000000000000",
        occurred_at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
        detail="Test delivery webhook details",
    ),
}


@pytest.mark.parametrize("name", sorted(POSTMARK_CASES))
def test_postmark_record_parses_to_its_event(name: str) -> None:
    events = postmark.parse(basic(POSTMARK_AUTH), fixture("postmark", name), secret=POSTMARK_AUTH)
    assert events == [POSTMARK_CASES[name]]


def test_postmark_delivery_id_is_the_same_for_a_reserialized_record() -> None:
    record = json.loads(fixture("postmark", "delivery.json"))
    reordered = json.dumps(dict(reversed(list(record.items()))), indent=4).encode()
    [first] = postmark.parse(basic(POSTMARK_AUTH), reordered, secret=POSTMARK_AUTH)
    assert first.event_id == POSTMARK_CASES["delivery.json"].event_id
    record["DeliveredAt"] = "2019-11-05T16:33:55.0000000Z"  # another delivery: another id
    [other] = postmark.parse(
        basic(POSTMARK_AUTH), json.dumps(record).encode(), secret=POSTMARK_AUTH
    )
    assert other.event_id != first.event_id


@pytest.mark.parametrize("name", ["open.json", "bounce-autoresponder.json"])
def test_postmark_opens_and_auto_replies_yield_no_event(name: str) -> None:
    assert (
        postmark.parse(basic(POSTMARK_AUTH), fixture("postmark", name), secret=POSTMARK_AUTH) == []
    )


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [
        ("BadEmailAddress", EventKind.bounced_hard),
        ("ManuallyDeactivated", EventKind.bounced_hard),
        ("Transient", EventKind.bounced_soft),
        ("DnsError", EventKind.bounced_soft),
        ("Blocked", EventKind.bounced_soft),
        ("SpamComplaint", EventKind.complained),
        ("Unsubscribe", None),
        ("ChallengeVerification", None),
    ],
)
def test_postmark_bounce_types_map_as_documented(bounce_type: str, kind: EventKind | None) -> None:
    record = json.loads(fixture("postmark", "bounce-hard.json")) | {"Type": bounce_type}
    events = postmark.parse(basic(POSTMARK_AUTH), json.dumps(record).encode(), secret=POSTMARK_AUTH)
    assert [e.kind for e in events] == ([] if kind is None else [kind])


def test_postmark_header_name_is_case_insensitive() -> None:
    headers = {"authorization": basic(POSTMARK_AUTH)["Authorization"]}
    events = postmark.parse(headers, fixture("postmark", "bounce-hard.json"), secret=POSTMARK_AUTH)
    assert [e.event_id for e in events] == ["4323372036854775807"]


@pytest.mark.parametrize(
    "headers",
    [
        basic("hooks:wrong-password"),  # wrong secret
        basic("hooks:correct-horse-batterz"),  # forged: one character off
        basic("hooks:correct-horse-battery:extra"),
        {},  # missing header
        {"Authorization": "Bearer " + base64.b64encode(POSTMARK_AUTH.encode()).decode()},
        {"Authorization": "Basic not*base64"},
        {"Authorization": "Basic"},
    ],
)
def test_postmark_refuses_wrong_or_missing_credentials(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected) as refused:
        postmark.parse(headers, fixture("postmark", "bounce-hard.json"), secret=POSTMARK_AUTH)
    assert "correct-horse" not in str(refused.value)


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe", b"[]", b'{"RecordType": "Bounce", "Type": "HardBounce"}']
)
def test_postmark_refuses_malformed_bodies(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        postmark.parse(basic(POSTMARK_AUTH), body, secret=POSTMARK_AUTH)


def test_postmark_secret_must_be_user_colon_password() -> None:
    with pytest.raises(ValueError, match="user:password"):
        postmark.parse(basic("x:y"), b"{}", secret="no-colon")


# --- SendGrid -----------------------------------------------------------------------------

SG_TIMESTAMP = "1795608000"
SG_NOW = datetime.fromtimestamp(int(SG_TIMESTAMP) + 30, UTC)
SG_MESSAGE_ID = "14c5d75ce93"  # X-Message-Id: sg_message_id up to the first "."


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def sg_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sg_headers(
    key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str = SG_TIMESTAMP
) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def sg_event(event_id: str, kind: EventKind, email: str, ts: int, detail: str) -> ProviderEvent:
    return ProviderEvent(
        provider="sendgrid",
        event_id=event_id,
        kind=kind,
        email=email,
        provider_message_id=SG_MESSAGE_ID,
        occurred_at=datetime.fromtimestamp(ts, UTC),
        detail=detail,
    )


def test_sendgrid_signed_batch_parses_to_its_events(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "events.json")
    events = sendgrid.parse(
        sg_headers(sg_key, body), body, secret=public_key_b64(sg_key), now=SG_NOW
    )
    assert events == [
        sg_event(
            "rWVYmVk90MjZJ9iohOBa3w==",
            EventKind.delivered,
            "alex@example.com",
            1513299570,
            "250 OK",
        ),
        sg_event(
            "6g4ZI7SA-xmRDv57GoPIPw==",
            EventKind.bounced_hard,
            "bounce@example.com",
            1513299571,
            "Invalid Address: 5.0.0: 500 unknown recipient",
        ),
        sg_event(
            "Bl0cKeD7SA-xmRDv57GoPw==",
            EventKind.bounced_soft,
            "blocked@example.com",
            1513299572,
            "Reputation: 5.7.1: 550 5.7.1 Service unavailable; client host blocked",
        ),
        sg_event(
            "37nvH5QBz858KGVYCM4uOA==", EventKind.complained, "spam@example.com", 1513299575, ""
        ),
        dataclasses.replace(  # an asynchronous bounce: SendGrid sends no sg_message_id
            sg_event(
                "AsyncB0unce-xmRDv57GoPw==",
                EventKind.bounced_hard,
                "late@example.com",
                1513299577,
                "Mailbox Unavailable: 5.2.1: 550 5.2.1 mailbox disabled",
            ),
            provider_message_id=None,
        ),
    ]


def test_sendgrid_accepts_a_pem_armoured_key_and_lowercase_headers(
    sg_key: ec.EllipticCurvePrivateKey,
) -> None:
    body = fixture("sendgrid", "events.json")
    pem = sg_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    headers = {k.lower(): v for k, v in sg_headers(sg_key, body).items()}
    events = sendgrid.parse(headers, body, secret=pem.decode(), now=SG_NOW)
    assert len(events) == 5


def test_sendgrid_engagement_events_yield_no_event(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "engagement.json")
    headers = sg_headers(sg_key, body)
    assert sendgrid.parse(headers, body, secret=public_key_b64(sg_key), now=SG_NOW) == []


def test_sendgrid_refuses_a_signature_by_another_key(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "events.json")
    forged = sg_headers(ec.generate_private_key(ec.SECP256R1()), body)
    with pytest.raises(WebhookRejected, match="signature"):
        sendgrid.parse(forged, body, secret=public_key_b64(sg_key), now=SG_NOW)


def test_sendgrid_refuses_a_tampered_body(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "events.json")
    headers = sg_headers(sg_key, body)
    changed = tamper(body, b"bounce@example.com", b"bounce@example.con")
    with pytest.raises(WebhookRejected, match="signature"):
        sendgrid.parse(headers, changed, secret=public_key_b64(sg_key), now=SG_NOW)


def test_sendgrid_refuses_a_changed_timestamp(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "events.json")
    headers = sg_headers(sg_key, body)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(SG_TIMESTAMP) + 1)
    with pytest.raises(WebhookRejected, match="signature"):
        sendgrid.parse(headers, body, secret=public_key_b64(sg_key), now=SG_NOW)


@pytest.mark.parametrize(
    "missing",
    ["X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp"],
)
def test_sendgrid_refuses_a_missing_header(
    sg_key: ec.EllipticCurvePrivateKey, missing: str
) -> None:
    body = fixture("sendgrid", "events.json")
    headers = sg_headers(sg_key, body)
    del headers[missing]
    with pytest.raises(WebhookRejected, match=f"missing {missing}"):
        sendgrid.parse(headers, body, secret=public_key_b64(sg_key), now=SG_NOW)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(timedelta(minutes=9), True), (timedelta(minutes=11), False), (-timedelta(minutes=11), False)],
)
def test_sendgrid_refuses_timestamps_over_ten_minutes_from_now(
    sg_key: ec.EllipticCurvePrivateKey, offset: timedelta, accepted: bool
) -> None:
    body = fixture("sendgrid", "events.json")
    headers = sg_headers(sg_key, body)
    now = datetime.fromtimestamp(int(SG_TIMESTAMP), UTC) + offset
    if accepted:
        assert len(sendgrid.parse(headers, body, secret=public_key_b64(sg_key), now=now)) == 5
    else:
        with pytest.raises(WebhookRejected, match="stale or replayed"):
            sendgrid.parse(headers, body, secret=public_key_b64(sg_key), now=now)


def test_sendgrid_refuses_under_the_wrong_key(sg_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture("sendgrid", "events.json")
    other = public_key_b64(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(WebhookRejected, match="signature"):
        sendgrid.parse(sg_headers(sg_key, body), body, secret=other, now=SG_NOW)


@pytest.mark.parametrize("body", [b"[{not json", b'{"event": "bounce"}', b"[1, 2]"])
def test_sendgrid_refuses_malformed_signed_bodies(
    sg_key: ec.EllipticCurvePrivateKey, body: bytes
) -> None:
    with pytest.raises(WebhookRejected):
        sendgrid.parse(sg_headers(sg_key, body), body, secret=public_key_b64(sg_key), now=SG_NOW)


def test_sendgrid_key_that_is_not_a_key_is_a_setup_error(
    sg_key: ec.EllipticCurvePrivateKey,
) -> None:
    body = b"[]"
    with pytest.raises(ValueError, match="verification key"):
        sendgrid.parse(sg_headers(sg_key, body), body, secret="bm90IGEga2V5", now=SG_NOW)


# --- Mailgun ------------------------------------------------------------------------------

MAILGUN_KEY = "mailgun-test-webhook-signing-key"
MG_MESSAGE_ID = "20261125120000.4f1c2d3e5a6b7c8d@mg.example.com"


def mailgun_now(body: bytes, after: timedelta = timedelta(minutes=1)) -> datetime:
    timestamp = int(json.loads(body)["signature"]["timestamp"])
    return datetime.fromtimestamp(timestamp, UTC) + after


def mg_event(name: str, event_id: str, kind: EventKind, email: str, detail: str) -> ProviderEvent:
    data = json.loads(fixture("mailgun", name))["event-data"]
    return ProviderEvent(
        provider="mailgun",
        event_id=event_id,
        kind=kind,
        email=email,
        provider_message_id=MG_MESSAGE_ID,
        occurred_at=datetime.fromtimestamp(data["timestamp"], UTC),
        detail=detail,
    )


MAILGUN_CASES = {
    "delivered.json": mg_event(
        "delivered.json",
        "hTWCTD81RtiDN-6wy6y4oA",
        EventKind.delivered,
        "alice@example.com",
        "250 OK",
    ),
    "failed-permanent.json": mg_event(
        "failed-permanent.json",
        "G9Bn5sl1TC6nu79C8C0bwg",
        EventKind.bounced_hard,
        "bob@example.com",
        "permanent: bounce: 550 5.1.1 The email account that you tried to reach does not exist.",
    ),
    "failed-temporary.json": mg_event(
        "failed-temporary.json",
        "Fs7-5t81S2ulcEeBFi8pRw",
        EventKind.bounced_soft,
        "carol@nomx.example.com",
        "temporary: generic: 498 No MX for nomx.example.com",
    ),
    "complained.json": mg_event(
        "complained.json",
        "-Agny091SquKnsrW2NEKUA",
        EventKind.complained,
        "alice@example.com",
        "",
    ),
}


@pytest.mark.parametrize("name", sorted(MAILGUN_CASES))
def test_mailgun_signed_event_parses_to_its_event(name: str) -> None:
    body = fixture("mailgun", name)
    events = mailgun.parse({}, body, secret=MAILGUN_KEY, now=mailgun_now(body))
    assert events == [MAILGUN_CASES[name]]
    assert events[0].occurred_at.tzinfo is UTC


def test_mailgun_message_id_is_the_send_api_id_without_angle_brackets() -> None:
    sent = json.loads((Path(__file__).parent / "fixtures/http/mailgun/send-ok.json").read_text())
    body = fixture("mailgun", "failed-permanent.json")
    [event] = mailgun.parse({}, body, secret=MAILGUN_KEY, now=mailgun_now(body))
    assert sent["id"] == f"<{event.provider_message_id}>"


def test_mailgun_message_id_in_angle_brackets_is_stored_without_them() -> None:
    payload = json.loads(fixture("mailgun", "delivered.json"))
    payload["event-data"]["message"]["headers"]["message-id"] = f"<{MG_MESSAGE_ID}>"
    now = mailgun_now(fixture("mailgun", "delivered.json"))
    [event] = mailgun.parse({}, json.dumps(payload).encode(), secret=MAILGUN_KEY, now=now)
    assert event.provider_message_id == MG_MESSAGE_ID


def test_mailgun_opens_yield_no_event() -> None:
    body = fixture("mailgun", "opened.json")
    assert mailgun.parse({}, body, secret=MAILGUN_KEY, now=mailgun_now(body)) == []


def resign(body: bytes, key: str) -> bytes:
    payload = json.loads(body)
    block = payload["signature"]
    block["signature"] = hmac.new(
        key.encode(), (block["timestamp"] + block["token"]).encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps(payload).encode()


def test_mailgun_refuses_a_signature_by_another_key() -> None:
    body = fixture("mailgun", "delivered.json")
    forged = resign(body, "attacker-key")
    with pytest.raises(WebhookRejected, match="bad Mailgun signature"):
        mailgun.parse({}, forged, secret=MAILGUN_KEY, now=mailgun_now(body))


def test_mailgun_refuses_a_tampered_signed_field() -> None:
    # Mailgun signs timestamp + token only (not event-data), so the tampering that the
    # signature can catch is a change to those; one byte of the token here.
    body = fixture("mailgun", "delivered.json")
    changed = tamper(body, b'"651869375b9df', b'"651869375b9dF')
    with pytest.raises(WebhookRejected, match="bad Mailgun signature"):
        mailgun.parse({}, changed, secret=MAILGUN_KEY, now=mailgun_now(body))


@pytest.mark.parametrize("drop", ["signature", "token", "timestamp", "block"])
def test_mailgun_refuses_a_missing_signature_part(drop: str) -> None:
    payload = json.loads(fixture("mailgun", "delivered.json"))
    now = mailgun_now(fixture("mailgun", "delivered.json"))
    if drop == "block":
        del payload["signature"]
    else:
        del payload["signature"][drop]
    with pytest.raises(WebhookRejected, match="Mailgun signature"):
        mailgun.parse({}, json.dumps(payload).encode(), secret=MAILGUN_KEY, now=now)


def test_mailgun_refuses_a_stale_timestamp() -> None:
    body = fixture("mailgun", "failed-permanent.json")
    now = mailgun_now(body, after=timedelta(minutes=11))
    with pytest.raises(WebhookRejected, match="stale or replayed"):
        mailgun.parse({}, body, secret=MAILGUN_KEY, now=now)


def test_mailgun_refuses_under_the_wrong_key() -> None:
    body = fixture("mailgun", "failed-permanent.json")
    with pytest.raises(WebhookRejected, match="bad Mailgun signature"):
        mailgun.parse({}, body, secret="another-signing-key", now=mailgun_now(body))


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"text"'])
def test_mailgun_refuses_malformed_bodies(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        mailgun.parse({}, body, secret=MAILGUN_KEY, now=datetime.now(UTC))


def test_mailgun_refuses_a_signed_body_without_event_data() -> None:
    payload = json.loads(fixture("mailgun", "delivered.json"))
    del payload["event-data"]
    now = mailgun_now(fixture("mailgun", "delivered.json"))
    with pytest.raises(WebhookRejected, match="event-data"):
        mailgun.parse({}, json.dumps(payload).encode(), secret=MAILGUN_KEY, now=now)


# --- Amazon SES through SNS ---------------------------------------------------------------

TOPIC = "arn:aws:sns:us-east-1:123456789012:newsletter-ses-events"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
SNS_KEYS = {
    "Notification": ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
    "SubscriptionConfirmation": [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ],
}
SNS_KEYS["UnsubscribeConfirmation"] = SNS_KEYS["SubscriptionConfirmation"]


@dataclasses.dataclass
class SNSSigner:
    key: rsa.RSAPrivateKey
    pem: bytes

    def sign(self, message: dict[str, Any]) -> bytes:
        """``message`` as SNS would post it: signed over AWS's canonical string."""
        canonical = "".join(
            f"{k}\n{message[k]}\n" for k in SNS_KEYS[message["Type"]] if k in message
        ).encode()
        algorithm = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
        signature = self.key.sign(canonical, padding.PKCS1v15(), algorithm)
        return json.dumps(message | {"Signature": base64.b64encode(signature).decode()}).encode()


def self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_signer() -> SNSSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SNSSigner(key, self_signed(key))


@dataclasses.dataclass
class Fetcher:
    """Serves the test certificate and records which URLs were asked for."""

    pem: bytes
    urls: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem


def sns_message(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(fixture("ses", name))
    return loaded


def ses_parse(body: bytes, fetcher: Callable[[str], bytes], **headers: str) -> list[ProviderEvent]:
    return ses.parse(headers, body, secret=TOPIC, cert_fetcher=fetcher)


def ses_event(
    sns_id: str,
    kind: EventKind,
    email: str,
    message_id: str,
    when: str,
    detail: str,
    index: int = 0,
) -> ProviderEvent:
    return ProviderEvent(
        provider="ses",
        event_id=f"{sns_id}:{index}",
        kind=kind,
        email=email,
        provider_message_id=message_id,
        occurred_at=at(when),
        detail=detail,
    )


SES_CASES = {
    "bounce-permanent.json": [
        ses_event(
            "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            EventKind.bounced_hard,
            "jane@example.com",
            "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "2016-01-27T14:59:44.101Z",
            "Permanent/General: smtp; 550 5.1.1 <jane@example.com>... User unknown",
        ),
        ses_event(
            "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            EventKind.bounced_hard,
            "richard@example.com",
            "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "2016-01-27T14:59:44.101Z",
            "Permanent/General: smtp; 550 5.1.1 <richard@example.com>... User unknown",
            index=1,
        ),
    ],
    "bounce-transient-event.json": [
        ses_event(
            "5a1b8e2c-3d4f-5061-8a9b-0c1d2e3f4a5b",
            EventKind.bounced_soft,
            "mary@example.com",
            "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            "2017-08-05T00:41:02.669Z",
            "Transient/MailboxFull: smtp; 452 4.2.2 Mailbox full",
        ),
    ],
    "complaint.json": [
        ses_event(
            "0b4c6e55-2f79-5bd7-b8b6-8e8b7bbcd8f0",
            EventKind.complained,
            "richard@example.com",
            "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
            "2016-01-27T14:59:38.237Z",
            "abuse",
        ),
    ],
    "delivery.json": [
        ses_event(
            "6d2c1a1b-7bb4-5ae3-9f55-1c2b6e3a4d5e",
            EventKind.delivered,
            "jane@example.com",
            "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
            "2016-01-27T14:59:38.237Z",
            "250 ok: Message 64111812 accepted",
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(SES_CASES))
def test_ses_signed_notification_parses_to_its_events(sns_signer: SNSSigner, name: str) -> None:
    fetcher = Fetcher(sns_signer.pem)
    body = sns_signer.sign(sns_message(name))
    assert ses_parse(body, fetcher, **{"x-amz-sns-message-type": "Notification"}) == SES_CASES[name]
    assert fetcher.urls == [CERT_URL]


def test_ses_both_signature_versions_are_exercised() -> None:
    versions = {sns_message(name)["SignatureVersion"] for name in SES_CASES}
    subjects = ["Subject" in sns_message(name) for name in SES_CASES]
    assert versions == {"1", "2"} and any(subjects) and not all(subjects)


def test_ses_open_events_yield_no_event(sns_signer: SNSSigner) -> None:
    body = sns_signer.sign(sns_message("open-event.json"))
    assert ses_parse(body, Fetcher(sns_signer.pem)) == []


def test_ses_refuses_a_signature_by_another_key(sns_signer: SNSSigner) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = SNSSigner(other_key, sns_signer.pem).sign(sns_message("bounce-permanent.json"))
    with pytest.raises(WebhookRejected, match="bad SNS signature"):
        ses_parse(forged, Fetcher(sns_signer.pem))


def test_ses_refuses_a_tampered_body(sns_signer: SNSSigner) -> None:
    body = sns_signer.sign(sns_message("bounce-permanent.json"))
    changed = tamper(
        body, b"<jane@example.com>... User unknown", b"<jane@example.com>... User unknowN"
    )
    with pytest.raises(WebhookRejected, match="bad SNS signature"):
        ses_parse(changed, Fetcher(sns_signer.pem))


@pytest.mark.parametrize("field", ["Signature", "SigningCertURL", "SignatureVersion", "MessageId"])
def test_ses_refuses_a_missing_signature_field(sns_signer: SNSSigner, field: str) -> None:
    message = json.loads(sns_signer.sign(sns_message("delivery.json")))
    del message[field]
    with pytest.raises(WebhookRejected):
        ses_parse(json.dumps(message).encode(), Fetcher(sns_signer.pem))


def test_ses_refuses_a_message_type_header_that_contradicts_the_body(
    sns_signer: SNSSigner,
) -> None:
    body = sns_signer.sign(sns_message("delivery.json"))
    with pytest.raises(WebhookRejected, match="type header"):
        ses_parse(body, Fetcher(sns_signer.pem), **{"X-Amz-Sns-Message-Type": "Subscription"})


def test_ses_refuses_another_topic_without_fetching(sns_signer: SNSSigner) -> None:
    fetcher = Fetcher(sns_signer.pem)
    body = sns_signer.sign(sns_message("bounce-permanent.json"))
    with pytest.raises(WebhookRejected, match="TopicArn"):
        ses.parse({}, body, secret=TOPIC + "-other", cert_fetcher=fetcher)
    assert fetcher.urls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://s3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.amazonaws.com/SimpleNotificationService-1.pem",
        "",
    ],
)
def test_ses_refuses_a_certificate_url_off_sns_without_fetching(
    sns_signer: SNSSigner, url: str
) -> None:
    fetcher = Fetcher(sns_signer.pem)
    body = sns_signer.sign(sns_message("bounce-permanent.json") | {"SigningCertURL": url})
    with pytest.raises(WebhookRejected, match="SigningCertURL"):
        ses_parse(body, fetcher)
    assert fetcher.urls == []


def test_ses_accepts_a_china_region_certificate_url(sns_signer: SNSSigner) -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    fetcher = Fetcher(sns_signer.pem)
    body = sns_signer.sign(sns_message("delivery.json") | {"SigningCertURL": url})
    assert [e.kind for e in ses_parse(body, fetcher)] == [EventKind.delivered]
    assert fetcher.urls == [url]


def test_ses_refuses_an_unknown_signature_version(sns_signer: SNSSigner) -> None:
    message = json.loads(sns_signer.sign(sns_message("delivery.json")))
    message["SignatureVersion"] = "3"
    with pytest.raises(WebhookRejected, match="SignatureVersion"):
        ses_parse(json.dumps(message).encode(), Fetcher(sns_signer.pem))


def test_ses_refuses_an_unreadable_certificate(sns_signer: SNSSigner) -> None:
    body = sns_signer.sign(sns_message("delivery.json"))
    with pytest.raises(WebhookRejected, match="certificate"):
        ses_parse(body, Fetcher(b"<html>not a certificate</html>"))


@pytest.mark.parametrize("body", [b"{not json", b"[]"])
def test_ses_refuses_malformed_bodies(sns_signer: SNSSigner, body: bytes) -> None:
    fetcher = Fetcher(sns_signer.pem)
    with pytest.raises(WebhookRejected):
        ses_parse(body, fetcher)
    assert fetcher.urls == []


def test_ses_refuses_a_signed_message_that_is_not_json(sns_signer: SNSSigner) -> None:
    body = sns_signer.sign(sns_message("delivery.json") | {"Message": "Hello world!"})
    with pytest.raises(WebhookRejected, match="not JSON"):
        ses_parse(body, Fetcher(sns_signer.pem))


def test_ses_subscription_confirmation_yields_its_url_and_no_event(
    sns_signer: SNSSigner,
) -> None:
    message = sns_message("subscription-confirmation.json")
    body = sns_signer.sign(message)
    fetcher = Fetcher(sns_signer.pem)
    assert ses_parse(body, fetcher) == []
    assert subscription_confirm_url({}, body, TOPIC, fetcher) == message["SubscribeURL"]
    assert message["SubscribeURL"].startswith(
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&"
    )
    notification = sns_signer.sign(sns_message("delivery.json"))
    assert subscription_confirm_url({}, notification, TOPIC, fetcher) is None


def test_ses_unsubscribe_confirmation_yields_nothing(sns_signer: SNSSigner) -> None:
    message = sns_message("subscription-confirmation.json") | {"Type": "UnsubscribeConfirmation"}
    body = sns_signer.sign(message)
    assert ses_parse(body, Fetcher(sns_signer.pem)) == []
    assert subscription_confirm_url({}, body, TOPIC, Fetcher(sns_signer.pem)) is None


def test_ses_refuses_a_forged_subscription_confirmation(sns_signer: SNSSigner) -> None:
    body = sns_signer.sign(sns_message("subscription-confirmation.json"))
    changed = tamper(body, b"Action=ConfirmSubscription", b"Action=ConfirmSubscriptioN")
    with pytest.raises(WebhookRejected, match="bad SNS signature"):
        subscription_confirm_url({}, changed, TOPIC, Fetcher(sns_signer.pem))


def test_ses_refuses_a_subscribe_url_off_sns(sns_signer: SNSSigner) -> None:
    message = sns_message("subscription-confirmation.json")
    body = sns_signer.sign(message | {"SubscribeURL": "https://evil.example/confirm"})
    with pytest.raises(WebhookRejected, match="SubscribeURL"):
        subscription_confirm_url({}, body, TOPIC, Fetcher(sns_signer.pem))


class FakeResponse:
    def __init__(self, status: int, content: bytes) -> None:
        self.status_code = status
        self.content = content

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code}")


def test_default_certificate_fetcher_caches_by_url(
    monkeypatch: pytest.MonkeyPatch, sns_signer: SNSSigner
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_get(url: str, **kwargs: Any) -> FakeResponse:
        calls.append((url, kwargs))
        return FakeResponse(200, sns_signer.pem)

    monkeypatch.setattr("requests.get", fake_get)
    ses.clear_certificate_cache()
    try:
        body = sns_signer.sign(sns_message("delivery.json"))
        for _ in range(3):
            assert len(ses.parse({}, body, secret=TOPIC)) == 1
    finally:
        ses.clear_certificate_cache()
    assert calls == [(CERT_URL, {"timeout": 5, "allow_redirects": False})]


def test_default_certificate_fetcher_failure_is_not_a_rejection(
    monkeypatch: pytest.MonkeyPatch, sns_signer: SNSSigner
) -> None:
    monkeypatch.setattr("requests.get", lambda url, **kw: FakeResponse(503, b""))
    ses.clear_certificate_cache()
    try:
        body = sns_signer.sign(sns_message("delivery.json"))
        with pytest.raises(ses.CertificateUnavailable):
            ses.parse({}, body, secret=TOPIC)
    finally:
        ses.clear_certificate_cache()


# --- Resend (Svix) ------------------------------------------------------------------------

RESEND_KEY = b"resend-test-signing-secret-32byt"
RESEND_SECRET = "whsec_" + base64.b64encode(RESEND_KEY).decode()
SVIX_ID = "msg_2W2D3qXLS5fOaPja1GDg7rF2CwB"
SVIX_TIMESTAMP = "1795608000"
RESEND_NOW = datetime.fromtimestamp(int(SVIX_TIMESTAMP) + 20, UTC)


def svix_headers(body: bytes, key: bytes = RESEND_KEY, svix_id: str = SVIX_ID) -> dict[str, str]:
    signed = f"{svix_id}.{SVIX_TIMESTAMP}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "svix-id": svix_id,
        "svix-timestamp": SVIX_TIMESTAMP,
        "svix-signature": f"v1,{signature}",
    }


def rs_event(
    kind: EventKind,
    email: str,
    detail: str = "",
    message_id: str = "56761188-7520-42d8-8898-ff6fc54ce618",
    when: str = "2024-11-22T23:41:12.126Z",
) -> ProviderEvent:
    return ProviderEvent(
        provider="resend",
        event_id=SVIX_ID,
        kind=kind,
        email=email,
        provider_message_id=message_id,
        occurred_at=at(when),
        detail=detail,
    )


RESEND_CASES = {
    "bounced.json": rs_event(
        EventKind.bounced_hard,
        "bounced@resend.dev",
        "Permanent: Suppressed: The recipient's email address is on the suppression list because "
        "it has a recent history of producing hard bounces.",
    ),
    "bounced-transient.json": rs_event(
        EventKind.bounced_soft,
        "mary@example.com",
        "Transient: MailboxFull: The recipient's mailbox is full.",
        message_id="0b5e9c8a-1f2d-4e3b-9a7c-6d5e4f3a2b1c",
        when="2024-11-22T23:45:00.000Z",
    ),
    "complained.json": rs_event(EventKind.complained, "complained@resend.dev"),
    "delivered.json": rs_event(EventKind.delivered, "delivered@resend.dev"),
}


@pytest.mark.parametrize("name", sorted(RESEND_CASES))
def test_resend_signed_event_parses_to_its_event(name: str) -> None:
    body = fixture("resend", name)
    events = resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=RESEND_NOW)
    assert events == [RESEND_CASES[name]]


@pytest.mark.parametrize("name", ["delivery-delayed.json", "opened.json"])
def test_resend_other_events_yield_no_event(name: str) -> None:
    body = fixture("resend", name)
    assert resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=RESEND_NOW) == []


def test_resend_bounce_without_a_type_is_hard() -> None:
    payload = json.loads(fixture("resend", "bounced.json"))
    del payload["data"]["bounce"]["type"]
    body = json.dumps(payload).encode()
    [event] = resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=RESEND_NOW)
    assert event.kind is EventKind.bounced_hard


def test_resend_one_event_per_recipient_with_distinct_ids() -> None:
    payload = json.loads(fixture("resend", "delivered.json"))
    payload["data"]["to"] = ["a@example.com", "B <b@example.com>"]
    body = json.dumps(payload).encode()
    events = resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=RESEND_NOW)
    assert [(e.event_id, e.email) for e in events] == [
        (f"{SVIX_ID}:0", "a@example.com"),
        (f"{SVIX_ID}:1", "b@example.com"),
    ]


def test_resend_accepts_any_one_valid_signature_of_several() -> None:
    body = fixture("resend", "bounced.json")
    headers = svix_headers(body)
    old = svix_headers(body, key=b"the-previous-secret")["svix-signature"]
    headers["svix-signature"] = f"{old} v2,ignored {headers['svix-signature']}"
    assert len(resend.parse(headers, body, secret=RESEND_SECRET, now=RESEND_NOW)) == 1


def test_resend_refuses_a_signature_by_another_secret() -> None:
    body = fixture("resend", "bounced.json")
    forged = svix_headers(body, key=b"attacker-secret")
    with pytest.raises(WebhookRejected, match="bad Svix signature"):
        resend.parse(forged, body, secret=RESEND_SECRET, now=RESEND_NOW)


def test_resend_refuses_a_tampered_body() -> None:
    body = fixture("resend", "bounced.json")
    headers = svix_headers(body)
    changed = tamper(body, b'"Permanent"', b'"Permanenz"')
    with pytest.raises(WebhookRejected, match="bad Svix signature"):
        resend.parse(headers, changed, secret=RESEND_SECRET, now=RESEND_NOW)


def test_resend_refuses_a_changed_message_id() -> None:
    body = fixture("resend", "bounced.json")
    headers = svix_headers(body) | {"svix-id": "msg_another"}
    with pytest.raises(WebhookRejected, match="bad Svix signature"):
        resend.parse(headers, body, secret=RESEND_SECRET, now=RESEND_NOW)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_resend_refuses_a_missing_header(missing: str) -> None:
    body = fixture("resend", "bounced.json")
    headers = svix_headers(body)
    del headers[missing]
    with pytest.raises(WebhookRejected, match=f"missing {missing}"):
        resend.parse(headers, body, secret=RESEND_SECRET, now=RESEND_NOW)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(timedelta(minutes=4), True), (timedelta(minutes=6), False), (-timedelta(minutes=6), False)],
)
def test_resend_refuses_timestamps_over_five_minutes_from_now(
    offset: timedelta, accepted: bool
) -> None:
    body = fixture("resend", "bounced.json")
    now = datetime.fromtimestamp(int(SVIX_TIMESTAMP), UTC) + offset
    if accepted:
        assert len(resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=now)) == 1
    else:
        with pytest.raises(WebhookRejected, match="stale or replayed"):
            resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=now)


def test_resend_refuses_under_the_wrong_secret() -> None:
    body = fixture("resend", "bounced.json")
    other = "whsec_" + base64.b64encode(b"another-signing-secret").decode()
    with pytest.raises(WebhookRejected, match="bad Svix signature"):
        resend.parse(svix_headers(body), body, secret=other, now=RESEND_NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"type": "email.bounced"}',
        b'{"type": "email.bounced", "created_at": "2024-11-22T23:41:12.126Z", "data": {"to": []}}',
    ],
)
def test_resend_refuses_malformed_signed_bodies(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        resend.parse(svix_headers(body), body, secret=RESEND_SECRET, now=RESEND_NOW)


def test_resend_secret_that_is_not_whsec_base64_is_a_setup_error() -> None:
    body = fixture("resend", "bounced.json")
    with pytest.raises(ValueError, match="whsec_"):
        resend.parse(svix_headers(body), body, secret="whsec_not*base64", now=RESEND_NOW)
