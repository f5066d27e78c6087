"""Postmark, SendGrid and Resend backends against a real HTTP server.

Every request goes over TCP to ``api_stub`` (tests/conftest.py), which answers with the
providers' recorded responses from tests/fixtures/http/<provider>/. Messages are real ones
built by ``MessageTemplate`` for an edition of the example comparisons.
"""

from __future__ import annotations

import html
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends import BackendError, SendStatus, backend_from_url
from newsletter.backends.base import HandoverError
from newsletter.backends.http import APIKeyBackend, HTTPBackend, HTTPBackendError
from newsletter.backends.postmark import PostmarkBackend
from newsletter.backends.resend import ResendBackend
from newsletter.backends.sendgrid import SendGridBackend
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import Recipient
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import Delivery, Subscriber
from tests.conftest import PINNED_DATE

from .conftest import APIStub, RecordedCall

FIXTURES = Path(__file__).parent / "fixtures" / "http"
NAMES = ["Ada Lovelace", None, "Doe, Jane"]
FROM = "Weekly AI Tool Verdicts <verdicts@news.example.com>"


def recorded(provider: str, name: str) -> str:
    return (FIXTURES / provider / f"{name}.json").read_text()


def lower_headers(call: RecordedCall) -> dict[str, str]:
    return {k.lower(): v for k, v in call.headers.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the three providers, described once -------------------------------------------------------

Reply = tuple[int, str, dict[str, str]]


def _postmark_ok(provider_id: str) -> Reply:
    body = json.loads(recorded("postmark", "send-ok"))
    return 200, json.dumps({**body, "MessageID": provider_id}), {}


def _sendgrid_ok(provider_id: str) -> Reply:
    return 202, "", {"X-Message-Id": provider_id}  # SendGrid's 202 has an empty body


def _resend_ok(provider_id: str) -> Reply:
    return 200, json.dumps({"id": provider_id}), {}


#: The backends here that keep an ``endpoint`` (Postmark's is not an APIKeyBackend).
WITH_ENDPOINT = (PostmarkBackend, APIKeyBackend)


@dataclass(frozen=True)
class Provider:
    scheme: str
    cls: type[HTTPBackend]
    key: str  # contains "/" so the URL must percent-encode it
    path: str
    auth_header: str
    auth_value: str
    default_description: str
    ok: Callable[[str], Reply]
    ok_status: int
    recipient_of: Callable[[dict[str, Any]], str]

    def url(self, endpoint: str, extra: str = "") -> str:
        return f"{self.scheme}://{quote(self.key, safe='')}@?endpoint={endpoint}{extra}"

    def backend(self, stub: APIStub, extra: str = "") -> HTTPBackend:
        backend = backend_from_url(self.url(stub.url, extra))
        assert isinstance(backend, self.cls)
        return backend


POSTMARK = Provider(
    "postmark",
    PostmarkBackend,
    "pm-7f3c/server-token",
    "/email",
    "x-postmark-server-token",
    "pm-7f3c/server-token",
    "postmark (api.postmarkapp.com, stream=broadcast)",
    _postmark_ok,
    200,
    lambda body: parseaddr(body["To"])[1],
)
SENDGRID = Provider(
    "sendgrid",
    SendGridBackend,
    "SG.k3y/s3cret",
    "/v3/mail/send",
    "authorization",
    "Bearer SG.k3y/s3cret",
    "sendgrid (api.sendgrid.com)",
    _sendgrid_ok,
    202,
    lambda body: body["personalizations"][0]["to"][0]["email"],
)
RESEND = Provider(
    "resend",
    ResendBackend,
    "re_k3y/s3cret",
    "/emails",
    "authorization",
    "Bearer re_k3y/s3cret",
    "resend (api.resend.com)",
    _resend_ok,
    200,
    lambda body: parseaddr(body["to"][0])[1],
)
PROVIDERS = [POSTMARK, SENDGRID, RESEND]
by_scheme = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.scheme)


@dataclass
class Built:
    messages: list[OutgoingMessage]
    unsubscribe_urls: list[str]
    previews: list[tuple[str, str]]  # (html, text) each recipient should see


@pytest.fixture
def built(session: Session, settings: Settings, draft: int) -> Built:
    edition = store.get_edition(session, edition_id=draft)
    _, template, _ = publish.prepare(session, edition=edition, settings=settings)
    signer = publish.signer_for(settings)
    people = [Recipient(i + 1, f"r{i}@example.com", name) for i, name in enumerate(NAMES)]
    return Built(
        [template.build(p, signer, now=PINNED_DATE) for p in people],
        [template.unsubscribe_url(signer, p.subscriber_id) for p in people],
        [template.preview(p, signer) for p in people],
    )


def check_common_request(
    provider: Provider, call: RecordedCall, index: int, built: Built, html_body: str, text: str
) -> None:
    """Path, auth header, JSON content type and the recipient's own unsubscribe URL."""
    assert call.method == "POST" and call.path == provider.path
    headers = lower_headers(call)
    assert headers[provider.auth_header] == provider.auth_value
    assert headers["content-type"] == "application/json"
    url = built.unsubscribe_urls[index]
    assert url.startswith("https://news.example.com/u/")
    assert html.escape(url) in html_body and url in text
    for other in set(built.unsubscribe_urls) - {url}:
        assert other not in text and html.escape(other) not in html_body
    name = NAMES[index]
    if name:
        assert name in text  # the greeting is personalized too
    assert (html_body, text) == built.previews[index]
    assert html_body.lstrip().lower().startswith(("<!doctype", "<html"))
    assert "<body" not in text.lower()


def expected_list_headers(message: OutgoingMessage, url: str) -> dict[str, str]:
    assert message.content is not None
    list_id = message.content.headers["List-Id"]
    assert list_id.endswith(".news.example.com>")
    feedback = message.content.headers["Feedback-ID"]
    assert re.fullmatch(r"\d+:weekly-ai-tool-verdicts:weekly:[0-9a-f]{10}", feedback), feedback
    return {
        "Message-ID": message.message_id,
        "List-Id": list_id,
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Feedback-ID": feedback,
    }


# --- the request each provider gets --------------------------------------------------------------


def test_postmark_request(api_stub: APIStub, built: Built) -> None:
    api_stub.reply(200, recorded("postmark", "send-ok"))
    with POSTMARK.backend(api_stub) as backend:
        backend.send_messages(built.messages)
    assert len(api_stub.calls) == 3
    tos = ["Ada Lovelace <r0@example.com>", "r1@example.com", '"Doe, Jane" <r2@example.com>']
    for i, (call, message) in enumerate(zip(api_stub.calls, built.messages, strict=True)):
        body = json.loads(call.body)
        check_common_request(POSTMARK, call, i, built, body["HtmlBody"], body["TextBody"])
        assert lower_headers(call)["accept"] == "application/json"
        assert "authorization" not in lower_headers(call)
        assert body["From"] == FROM and body["To"] == tos[i]
        assert message.content is not None and body["Subject"] == message.content.subject
        assert body["MessageStream"] == "broadcast"
        sent_headers = {h["Name"]: h["Value"] for h in body["Headers"]}
        assert sent_headers == expected_list_headers(message, built.unsubscribe_urls[i])


def test_postmark_stream_option(api_stub: APIStub, built: Built) -> None:
    api_stub.reply(200, recorded("postmark", "send-ok"))
    backend = POSTMARK.backend(api_stub, "&stream=weekly-digest")
    assert backend.describe().endswith("stream=weekly-digest)")
    backend.send_messages(built.messages[:1])
    assert json.loads(api_stub.calls[0].body)["MessageStream"] == "weekly-digest"


def test_sendgrid_request(api_stub: APIStub, built: Built) -> None:
    api_stub.reply(*SENDGRID.ok("sg-id"))
    with SENDGRID.backend(api_stub) as backend:
        backend.send_messages(built.messages)
    assert len(api_stub.calls) == 3
    tos = [
        {"email": "r0@example.com", "name": "Ada Lovelace"},
        {"email": "r1@example.com"},
        {"email": "r2@example.com", "name": "Doe, Jane"},
    ]
    for i, (call, message) in enumerate(zip(api_stub.calls, built.messages, strict=True)):
        body = json.loads(call.body)
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        text, html_body = (c["value"] for c in body["content"])
        check_common_request(SENDGRID, call, i, built, html_body, text)
        assert body["personalizations"] == [{"to": [tos[i]]}]
        assert body["from"] == {
            "email": "verdicts@news.example.com",
            "name": "Weekly AI Tool Verdicts",
        }
        assert message.content is not None and body["subject"] == message.content.subject
        assert body["headers"] == expected_list_headers(message, built.unsubscribe_urls[i])


def test_sendgrid_drops_reserved_headers(api_stub: APIStub, built: Built) -> None:
    """SendGrid answers 400 to the whole request if `headers` names To, From, Reply-To..."""
    api_stub.reply(*SENDGRID.ok("sg-id"))
    message = built.messages[0]
    assert message.content is not None
    extra = {"Reply-To": "x@example.com", "from": "y@example.com", "X-Campaign": "weekly"}
    content = replace(message.content, headers={**message.content.headers, **extra})
    SENDGRID.backend(api_stub).send_messages([replace(message, content=content)])
    sent = json.loads(api_stub.calls[0].body)["headers"]
    assert sent == {
        **expected_list_headers(message, built.unsubscribe_urls[0]),
        "X-Campaign": "weekly",
    }


def test_resend_request_carries_the_idempotency_key(api_stub: APIStub, built: Built) -> None:
    api_stub.reply(200, recorded("resend", "send-ok"))
    with RESEND.backend(api_stub) as backend:
        backend.send_messages(built.messages)
    assert len(api_stub.calls) == 3
    tos = ["Ada Lovelace <r0@example.com>", "r1@example.com", '"Doe, Jane" <r2@example.com>']
    keys = []
    for i, (call, message) in enumerate(zip(api_stub.calls, built.messages, strict=True)):
        body = json.loads(call.body)
        check_common_request(RESEND, call, i, built, body["html"], body["text"])
        keys.append(lower_headers(call)["idempotency-key"])
        assert keys[-1] == message.key
        assert body["from"] == FROM and body["to"] == [tos[i]]
        assert message.content is not None and body["subject"] == message.content.subject
        assert body["headers"] == expected_list_headers(message, built.unsubscribe_urls[i])
    assert len(set(keys)) == 3


# --- what each answer becomes ---------------------------------------------------------------


@by_scheme
def test_success_is_queued_with_the_provider_id(
    provider: Provider, api_stub: APIStub, built: Built
) -> None:
    for i in range(3):
        api_stub.reply(*provider.ok(f"id-{i}"))
    results = provider.backend(api_stub).send_messages(built.messages)
    assert [r.status for r in results] == [SendStatus.queued] * 3
    assert [r.code for r in results] == [provider.ok_status] * 3
    assert [r.provider_id for r in results] == ["id-0", "id-1", "id-2"]


ONE_MESSAGE_REFUSALS = [
    (POSTMARK, 422, "error-300-invalid-email", SendStatus.invalid, "Illegal email address"),
    (POSTMARK, 422, "error-406-inactive-recipient", SendStatus.rejected, "marked as inactive"),
    (SENDGRID, 400, "error-400-invalid-to", SendStatus.invalid, "to.0.email: Does not contain"),
    (SENDGRID, 413, "error-413-too-large", SendStatus.invalid, "payload you have included"),
    (RESEND, 422, "error-422-validation", SendStatus.invalid, "validation_error: Invalid `to`"),
    (RESEND, 409, "error-409-concurrent-idempotent", SendStatus.deferred, "still in progress"),
    (RESEND, 409, "error-409-invalid-idempotent", SendStatus.unknown, "different request payload"),
]
ACCOUNT_REFUSALS = [
    (POSTMARK, 401, "error-10-bad-token", "Server Token you provided"),
    (POSTMARK, 422, "error-412-account-pending", "pending approval"),
    (SENDGRID, 401, "error-401-bad-key", "authorization grant is invalid"),
    (SENDGRID, 403, "error-403-unverified-sender", "verified Sender Identity"),
    (RESEND, 401, "error-401-invalid-key", "API key is invalid"),
    (RESEND, 403, "error-403-domain-not-verified", "domain is not verified"),
]


def case_id(value: Any) -> str | None:
    return value.scheme if isinstance(value, Provider) else None


@pytest.mark.parametrize(
    ("provider", "code", "fixture", "status", "text"), ONE_MESSAGE_REFUSALS, ids=case_id
)
def test_refusals_of_one_message(
    provider: Provider,
    code: int,
    fixture: str,
    status: SendStatus,
    text: str,
    api_stub: APIStub,
    built: Built,
) -> None:
    """Only the refused message is marked; the batch goes on and the next one is queued."""
    api_stub.reply(code, recorded(provider.scheme, fixture))
    api_stub.reply(*provider.ok("next-id"))
    results = provider.backend(api_stub).send_messages(built.messages[:2])
    assert results[0].status == status and results[0].code == code
    assert text in results[0].detail
    assert results[0].provider_id is None
    assert results[1].status == SendStatus.queued and results[1].provider_id == "next-id"


@pytest.mark.parametrize(("provider", "code", "fixture", "text"), ACCOUNT_REFUSALS, ids=case_id)
def test_account_refusals_raise_without_the_key(
    provider: Provider, code: int, fixture: str, text: str, api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(code, recorded(provider.scheme, fixture))
    backend = provider.backend(api_stub)
    with pytest.raises(HTTPBackendError) as excinfo:
        backend.send_messages(built.messages)
    error = excinfo.value
    assert len(api_stub.calls) == 1, "stops at the first refusal instead of failing everyone"
    assert error.status_code == code
    assert error.body is not None and text in error.body and text in str(error)
    assert "r0@example.com" in json.dumps(error.payload), "carries what was sent"
    for leaked in (str(error), repr(error), json.dumps(error.payload), error.body):
        assert provider.key not in leaked and quote(provider.key, safe="") not in leaked
    assert backend.session is None, "send_messages closed the session it opened"


@by_scheme
def test_rate_limit_is_deferred_with_retry_after(
    provider: Provider, api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(429, recorded(provider.scheme, "error-429-rate-limit"), {"Retry-After": "7"})
    results = provider.backend(api_stub).send_messages(built.messages)
    assert [r.status for r in results] == [SendStatus.deferred] * 3
    assert all(r.code == 429 and r.retry_after == 7 for r in results)
    assert "Retry-After: 7" in results[0].detail
    assert len(api_stub.calls) == 1  # the rest of the batch waits instead of hammering the API


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    from datetime import UTC, datetime

    from newsletter.backends.http import parse_retry_after

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Wed, 25 Nov 2026 12:05:00 GMT", now=now) == 300
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("999999999", now=now) == 86_400
    assert parse_retry_after("soon", now=now) is None and parse_retry_after(None) is None


def test_the_providers_retry_after_sets_the_retry_time(
    api_stub: APIStub, seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    add_subscribers(2)
    api_stub.reply(429, recorded("postmark", "error-429-rate-limit"), {"Retry-After": "7200"})
    quick = settings.model_copy(update={"retry_base_seconds": 1})
    before = datetime.now(UTC)
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=quick,
        backend=POSTMARK.backend(api_stub),
    )
    waits = [d.retry_at for d in seeded.exec(select(Delivery)).all()]
    assert len(waits) == 2 and all(
        w is not None and w >= before + timedelta(seconds=7200) for w in waits
    )


@by_scheme
def test_server_error_is_deferred(provider: Provider, api_stub: APIStub, built: Built) -> None:
    api_stub.reply(500, "Internal Server Error", {"Content-Type": "text/plain"})
    results = provider.backend(api_stub).send_messages(built.messages[:2])
    assert [(r.status, r.code) for r in results] == [(SendStatus.deferred, 500)] * 2
    assert "Internal Server Error" in results[0].detail


@by_scheme
def test_connection_refused_is_deferred(provider: Provider, built: Built) -> None:
    backend = backend_from_url(provider.url(f"http://127.0.0.1:{free_port()}", "&timeout=3"))
    results = backend.send_messages(built.messages[:2])
    assert [(r.status, r.code) for r in results] == [(SendStatus.deferred, None)] * 2
    assert "connection failed" in results[0].detail
    assert provider.key not in results[0].detail


@by_scheme
def test_message_without_fields_is_invalid_and_not_sent(
    provider: Provider, api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(*provider.ok("id"))
    bare = replace(built.messages[0], content=None)
    results = provider.backend(api_stub).send_messages([bare, built.messages[1]])
    assert results[0].status == SendStatus.invalid and "content" in results[0].detail
    assert results[1].status == SendStatus.queued
    assert len(api_stub.calls) == 1


@by_scheme
def test_one_session_serves_every_batch(
    provider: Provider, api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(*provider.ok("id"))
    backend = provider.backend(api_stub)
    with backend:
        session = backend.session
        assert session is not None
        session.headers["X-Probe"] = "one-session"  # every request through it carries this
        backend.send_messages(built.messages[:1])
        assert backend.session is session, "send_messages must not close the caller's session"
        backend.send_messages(built.messages[1:])
        assert backend.session is session
    assert backend.session is None
    assert len(api_stub.calls) == 3
    assert [lower_headers(c).get("x-probe") for c in api_stub.calls] == ["one-session"] * 3


# --- URLs and descriptions ---------------------------------------------------------------------


@by_scheme
def test_backend_from_url_builds_the_backend(provider: Provider) -> None:
    backend = backend_from_url(provider.url("http://127.0.0.1:8025/", "&timeout=2.5"))
    assert type(backend) is provider.cls and provider.scheme in provider.cls.schemes
    assert isinstance(backend, WITH_ENDPOINT)
    assert backend.endpoint == "http://127.0.0.1:8025"
    assert backend.timeout == 2.5
    assert backend.describe().startswith(f"{provider.scheme} (127.0.0.1:8025")
    eu = backend_from_url(f"{provider.scheme}://k@?endpoint=https://api.eu.example.com/base/")
    assert isinstance(eu, WITH_ENDPOINT) and eu.endpoint == "https://api.eu.example.com/base"
    default = backend_from_url(f"{provider.scheme}://k@")
    assert isinstance(default, HTTPBackend) and default.timeout == 15.0


@by_scheme
def test_describe_never_contains_the_key(provider: Provider) -> None:
    backend = backend_from_url(f"{provider.scheme}://{quote(provider.key, safe='')}@")
    description = backend.describe()
    assert description == provider.default_description
    assert provider.key not in description and quote(provider.key, safe="") not in description


@by_scheme
@pytest.mark.parametrize(
    "rest",
    [
        "",  # no key at all
        "@",  # empty key
        "SECRETKEY",  # no "@": the key would be read as a host
        "SECRETKEY@api.example.com",  # a host instead of ?endpoint=
        "SECRETKEY@?endpoint=http://api.example.com",  # plain http off localhost
        "SECRETKEY@?endpoint=ftp://127.0.0.1",
        "SECRETKEY@?endpoint=https://",
        "SECRETKEY@?timeout=soon",
        "SECRETKEY@?timeout=0",
        "SECRETKEY@?timeout=nan",
        "SECRETKEY@?stram=broadcast",  # a typo is not silently ignored
    ],
)
def test_bad_urls_raise_backend_error_without_the_key(provider: Provider, rest: str) -> None:
    with pytest.raises(BackendError) as excinfo:
        backend_from_url(f"{provider.scheme}://{rest}")
    assert "SECRETKEY" not in str(excinfo.value)


# --- a whole edition ----------------------------------------------------------------------------


@by_scheme
def test_send_edition_end_to_end(
    provider: Provider,
    api_stub: APIStub,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
) -> None:
    people = add_subscribers(5)
    ids = [f"{provider.scheme}-msg-{i}" for i in range(5)]
    for provider_id in ids:
        api_stub.reply(*provider.ok(provider_id))
    backend = provider.backend(api_stub)

    report = publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend)

    assert report.run.sent == 5 and report.run.attempted == 5
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts["queued"] == 5 and counts["sent"] == 0 and counts["pending"] == 0
    assert store.get_edition(seeded, edition_id=draft).status == "sent"
    # The stub answered the i-th request with ids[i]: each delivery keeps its own answer.
    answered = {
        provider.recipient_of(json.loads(call.body)): provider_id
        for call, provider_id in zip(api_stub.calls, ids, strict=True)
    }
    assert set(answered) == {p.email for p in people}
    rows = seeded.exec(
        select(Delivery, Subscriber)
        .join(Subscriber, col(Delivery.subscriber_id) == Subscriber.id)
        .where(Delivery.edition_id == draft)
    ).all()
    assert len(rows) == 5
    for delivery, subscriber in rows:
        assert delivery.status == "queued" and delivery.attempts == 1
        assert delivery.provider_message_id == answered[subscriber.email]
        assert delivery.message_id and delivery.message_id.startswith(f"<nl.{draft}.")
        assert delivery.error_text is None
    assert backend.session is None, "dispatch opened the session and closed it"


# --- hand-over: when a request has left in full ---------------------------------------------


@by_scheme
def test_each_request_is_reported_handed_over_before_its_answer(
    provider: Provider, api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(*provider.ok("id"))
    events: list[tuple[str, int]] = []
    provider.backend(api_stub).send_each(
        built.messages,
        lambda i, r: events.append(("answer", i)),
        lambda i: events.append(("handed", i)),
    )
    assert events == [e for i in range(3) for e in (("handed", i), ("answer", i))]
    assert len(api_stub.calls) == 3


def _swallowing_server() -> tuple[str, threading.Thread, list[bytes]]:
    """Reads one whole HTTP request, then closes the connection without a word: the provider
    got the request (and may have acted on it), the answer was lost."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            got.append(body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread, got


@by_scheme
def test_a_connection_lost_after_the_request_left_is_unknown_not_deferred(
    provider: Provider, built: Built
) -> None:
    """Deferred would be retried, and the provider may already be sending it: unknown."""
    url, thread, got = _swallowing_server()
    handed: list[int] = []
    backend = backend_from_url(provider.url(url, "&timeout=5"))
    results = backend.send_each(built.messages[:1], lambda i, r: None, handed.append)
    thread.join(5)
    assert len(got) == 1 and handed == [0]
    assert results[0].status == SendStatus.unknown
    assert "connection lost after the request was sent" in results[0].detail
    assert provider.key not in results[0].detail


def test_a_failing_hand_over_stops_the_send_and_is_not_taken_for_a_network_error(
    api_stub: APIStub, built: Built
) -> None:
    api_stub.reply(*POSTMARK.ok("id"))

    def full_disk(index: int) -> None:
        raise OSError(28, "No space left on device")

    answers: list[int] = []
    with pytest.raises(HandoverError, match="No space left"):
        POSTMARK.backend(api_stub).send_each(
            built.messages, lambda i, r: answers.append(i), full_disk
        )
    assert answers == []  # the message has no answer: it counts as in flight
    deadline = time.monotonic() + 5
    while not api_stub.calls and time.monotonic() < deadline:
        time.sleep(0.01)  # the stub records the request in its own thread
    assert len(api_stub.calls) == 1  # and the next message was never sent
