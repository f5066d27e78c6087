"""Mailgun and Amazon SES (v2 API) backends against a real HTTP server on 127.0.0.1.

Every request is checked as it arrived at the ``api_stub`` server: path, credentials, form or
JSON fields, the MIME bytes byte for byte, and for SES the Signature Version 4 recomputed here
independently. Answers are the providers' recorded responses in tests/fixtures/http/. The
signer itself is checked against AWS's published SigV4 test vectors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends import BackendError, SendStatus, backend_from_url, sigv4
from newsletter.backends.http import HTTPBackend, HTTPBackendError
from newsletter.backends.mailgun import MailgunBackend
from newsletter.backends.ses import SESBackend
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import Recipient
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import Delivery, Subscriber
from tests.conftest import PINNED_DATE

from .conftest import APIStub, RecordedCall

FIXTURES = Path(__file__).parent / "fixtures" / "http"
MG_KEY = "key-7f3a9c0e/b2+d41"  # a "/" and a "+": the URL carries it percent-encoded
MG_ID = "<20261125120000.4f1c2d3e5a6b7c8d@mg.example.com>"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # AWS's example secret from the vectors
SES_ID = "0100019a3f5c7e21-8c1b2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e-000000"
SECRETS = {"mailgun": MG_KEY, "ses": SECRET}


def recorded(provider: str, name: str) -> str:
    return (FIXTURES / provider / name).read_text()


def mailgun_url(endpoint: str, extra: str = "") -> str:
    return f"mailgun://{quote(MG_KEY, safe='')}@mg.example.com?endpoint={endpoint}{extra}"


def ses_url(endpoint: str, extra: str = "") -> str:
    # the "/" must be encoded in the URL; the "+" may stay as it is
    return f"ses://{AKID}:{SECRET.replace('/', '%2F')}@us-east-1?endpoint={endpoint}{extra}"


def make(provider: str, endpoint: str, extra: str = "") -> HTTPBackend:
    url = mailgun_url(endpoint, extra) if provider == "mailgun" else ses_url(endpoint, extra)
    backend = backend_from_url(url)
    assert isinstance(backend, MailgunBackend if provider == "mailgun" else SESBackend)
    return backend


@pytest.fixture
def messages(session: Session, settings: Settings, draft: int) -> list[OutgoingMessage]:
    edition = store.get_edition(session, edition_id=draft)
    _, template, _ = publish.prepare(session, edition=edition, settings=settings)
    signer = publish.signer_for(settings)
    names = ["Ada Lovelace", None, "Grace Hopper"]
    built = [
        template.build(Recipient(i + 1, f"r{i}@example.com", names[i]), signer, now=PINNED_DATE)
        for i in range(3)
    ]
    assert len({m.data for m in built}) == 3
    return built


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def form_parts(call: RecordedCall) -> dict[str, tuple[dict[str, str], bytes]]:
    """The parts of a multipart/form-data body, by field name: (part headers, raw content)."""
    content_type = call.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    chunks = call.body.split(b"--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = {}
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {
            k.lower(): v for k, v in (line.split(": ", 1) for line in head.decode().split("\r\n"))
        }
        name = re.search(r'name="([^"]*)"', headers["content-disposition"])
        assert name is not None
        parts[name[1]] = (headers, content)
    return parts


def recipient_of(provider: str, call: RecordedCall) -> str:
    if provider == "mailgun":
        return form_parts(call)["to"][1].decode()
    return str(json.loads(call.body)["Destination"]["ToAddresses"][0])


# --- SigV4, recomputed from what arrived, following the spec steps (no newsletter code) --------

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key_id>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


def recompute_signature(call: RecordedCall, secret: str) -> str:
    auth = AUTHORIZATION.fullmatch(call.headers["Authorization"])
    assert auth is not None, call.headers["Authorization"]
    headers = {k.lower(): v for k, v in call.headers.items()}
    path, _, query = call.path.partition("?")
    names = auth["signed"].split(";")
    canonical = "\n".join(
        [
            call.method,
            path,
            query,
            "".join(f"{name}:{headers[name].strip()}\n" for name in names),
            auth["signed"],
            hashlib.sha256(call.body).hexdigest(),
        ]
    )
    scope = [auth["date"], auth["region"], auth["service"], "aws4_request"]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers["x-amz-date"],
            "/".join(scope),
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = b"AWS4" + secret.encode()
    for part in scope:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


# --- Mailgun --------------------------------------------------------------------------------


def test_mailgun_posts_the_mime_bytes_unchanged(
    api_stub: APIStub, messages: list[OutgoingMessage]
) -> None:
    api_stub.reply(200, recorded("mailgun", "send-ok.json"))
    with make("mailgun", api_stub.url) as backend:
        results = backend.send_messages(messages)

    assert [r.status for r in results] == [SendStatus.queued] * 3
    assert [r.provider_id for r in results] == [MG_ID.strip("<>")] * 3  # as webhooks name it
    assert results[0].code == 200 and results[0].detail == "Queued. Thank you."
    assert len(api_stub.calls) == 3
    expected_auth = "Basic " + base64.b64encode(f"api:{MG_KEY}".encode()).decode()
    for call, message in zip(api_stub.calls, messages, strict=True):
        assert (call.method, call.path) == ("POST", "/v3/mg.example.com/messages.mime")
        assert call.headers["Authorization"] == expected_auth
        parts = form_parts(call)
        assert set(parts) == {"to", "message"}
        assert parts["to"][1] == message.recipient.encode()
        headers, mime = parts["message"]
        assert 'filename="message.mime"' in headers["content-disposition"]
        assert mime == message.data


def test_mailgun_validation_error_is_invalid_with_mailguns_message(
    api_stub: APIStub, messages: list[OutgoingMessage]
) -> None:
    api_stub.reply(400, recorded("mailgun", "error-400-invalid-to.json"))
    [result] = make("mailgun", api_stub.url).send_messages(messages[:1])
    assert result.status == SendStatus.invalid and result.code == 400
    assert "to parameter is not a valid address" in result.detail
    assert result.provider_id is None


@pytest.mark.parametrize(
    ("name", "code", "content_type", "text"),
    [
        ("error-401-forbidden.txt", 401, "text/plain; charset=utf-8", "Forbidden"),
        ("error-404-domain-not-found.json", 404, "application/json", "Domain not found"),
    ],
)
def test_mailgun_bad_key_or_unknown_domain_stops_the_backend_without_the_key(
    api_stub: APIStub,
    messages: list[OutgoingMessage],
    name: str,
    code: int,
    content_type: str,
    text: str,
) -> None:
    api_stub.reply(code, recorded("mailgun", name), {"Content-Type": content_type})
    with pytest.raises(HTTPBackendError) as excinfo:
        make("mailgun", api_stub.url).send_messages(messages)
    error = excinfo.value
    assert error.status_code == code and len(api_stub.calls) == 1
    assert text in str(error)
    for leaked in (str(error), error.body or "", repr(error.payload), repr(error.args)):
        assert MG_KEY not in leaked and quote(MG_KEY, safe="") not in leaked


@pytest.mark.parametrize(
    ("provider", "code", "name", "headers"),
    [
        ("mailgun", 429, "error-429-rate-limit.json", {"Retry-After": "30"}),
        ("mailgun", 500, "error-500-internal.json", {}),
        ("ses", 429, "error-429-too-many-requests.json", {"Retry-After": "30"}),
        ("ses", 400, "error-400-limit-exceeded.json", {}),
        ("ses", 500, "error-500-internal-failure.json", {}),
    ],
)
def test_throttling_and_server_errors_are_deferred(
    api_stub: APIStub,
    messages: list[OutgoingMessage],
    provider: str,
    code: int,
    name: str,
    headers: dict[str, str],
) -> None:
    api_stub.reply(code, recorded(provider, name), headers)
    results = make(provider, api_stub.url).send_messages(messages)
    assert [(r.status, r.code) for r in results] == [(SendStatus.deferred, code)] * 3
    assert json.loads(recorded(provider, name))["message"] in results[0].detail
    assert ("Retry-After: 30" in results[0].detail) == ("Retry-After" in headers)


@pytest.mark.parametrize("provider", ["mailgun", "ses"])
def test_connection_refused_is_deferred(provider: str, messages: list[OutgoingMessage]) -> None:
    backend = make(provider, f"http://127.0.0.1:{free_port()}", "&timeout=5")
    results = backend.send_messages(messages)
    assert [r.status for r in results] == [SendStatus.deferred] * 3
    assert all(r.code is None and "connection failed" in r.detail for r in results)
    assert all(SECRETS[provider] not in r.detail for r in results)


@pytest.mark.parametrize("provider", ["mailgun", "ses"])
def test_one_session_serves_the_whole_batch(
    provider: str,
    api_stub: APIStub,
    messages: list[OutgoingMessage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[Any] = []

    class CountingSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            created.append(self)

        def request(self, *args: Any, **kwargs: Any) -> requests.Response:
            self.sent += 1
            return super().request(*args, **kwargs)

    monkeypatch.setattr(requests, "Session", CountingSession)
    api_stub.reply(200, recorded(provider, "send-ok.json"))
    backend = make(provider, api_stub.url)
    with backend:
        first = backend.send_messages(messages[:2])
        second = backend.send_messages(messages[2:])
    assert [r.status for r in first + second] == [SendStatus.queued] * 3
    assert len(created) == 1 and created[0].sent == 3
    assert backend.session is None, "closed by the `with` that opened it"


# --- Amazon SES -----------------------------------------------------------------------------


def test_ses_posts_signed_json_with_the_raw_mime_unchanged(
    api_stub: APIStub, messages: list[OutgoingMessage]
) -> None:
    api_stub.reply(200, recorded("ses", "send-ok.json"))
    before = datetime.now(UTC)
    with make("ses", api_stub.url, "&configuration_set=weekly-news") as backend:
        results = backend.send_messages(messages)

    assert [(r.status, r.code, r.provider_id) for r in results] == [
        (SendStatus.queued, 200, SES_ID)
    ] * 3
    assert len(api_stub.calls) == 3
    for call, message in zip(api_stub.calls, messages, strict=True):
        assert (call.method, call.path) == ("POST", "/v2/email/outbound-emails")
        assert call.headers["Content-Type"] == "application/json"
        payload = json.loads(call.body)
        assert set(payload) == {
            "FromEmailAddress",
            "Destination",
            "Content",
            "ConfigurationSetName",
        }
        assert payload["FromEmailAddress"] == message.sender
        assert payload["Destination"] == {"ToAddresses": [message.recipient]}
        assert payload["ConfigurationSetName"] == "weekly-news"
        assert base64.b64decode(payload["Content"]["Raw"]["Data"], validate=True) == message.data

        auth = AUTHORIZATION.fullmatch(call.headers["Authorization"])
        assert auth is not None
        assert (auth["key_id"], auth["region"], auth["service"]) == (AKID, "us-east-1", "ses")
        assert auth["signed"] == "content-type;host;x-amz-content-sha256;x-amz-date"
        amz_date = call.headers["X-Amz-Date"]
        assert auth["date"] == amz_date[:8]
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs((signed_at - before).total_seconds()) < 300
        assert call.headers["Host"] == api_stub.url.removeprefix("http://")
        assert call.headers["X-Amz-Content-Sha256"] == hashlib.sha256(call.body).hexdigest()
        assert recompute_signature(call, SECRET) == auth["signature"]
        # ... and the check can fail: another secret, another body, another date
        assert recompute_signature(call, SECRET.replace("/", "")) != auth["signature"]
        assert (
            recompute_signature(replace(call, body=call.body + b" "), SECRET) != auth["signature"]
        )
        later = {**call.headers, "X-Amz-Date": "20300101T000000Z"}
        assert recompute_signature(replace(call, headers=later), SECRET) != auth["signature"]


def test_ses_without_configuration_set_sends_no_such_field(
    api_stub: APIStub, messages: list[OutgoingMessage]
) -> None:
    api_stub.reply(200, recorded("ses", "send-ok.json"))
    make("ses", api_stub.url).send_messages(messages[:1])
    assert "ConfigurationSetName" not in json.loads(api_stub.calls[0].body)


@pytest.mark.parametrize(
    ("name", "via_header", "status"),
    [
        ("error-400-message-rejected.json", False, SendStatus.rejected),
        ("error-400-bad-request.json", False, SendStatus.invalid),
        ("error-400-bad-request.json", True, SendStatus.invalid),
        ("error-400-limit-exceeded.json", True, SendStatus.deferred),
    ],
)
def test_ses_error_types_map_to_statuses_with_the_message(
    api_stub: APIStub,
    messages: list[OutgoingMessage],
    name: str,
    via_header: bool,
    status: SendStatus,
) -> None:
    """The type comes in ``__type`` or, as restJson1 services send it, X-Amzn-ErrorType."""
    body = json.loads(recorded("ses", name))
    headers = {}
    if via_header:
        kind = body.pop("__type")
        headers = {
            "X-Amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
        }
    api_stub.reply(400, json.dumps(body), headers)
    [result] = make("ses", api_stub.url).send_messages(messages[:1])
    assert (result.status, result.code, result.provider_id) == (status, 400, None)
    assert body["message"] in result.detail
    assert json.loads(recorded("ses", name))["__type"] in result.detail


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("error-403-invalid-signature.json", 403),
        ("error-404-configuration-set-not-found.json", 404),
        ("error-400-mail-from-domain-not-verified.json", 400),
        ("error-400-sending-paused.json", 400),
        ("error-400-account-suspended.json", 400),
    ],
)
def test_ses_bad_signature_or_unusable_account_stops_the_backend_without_the_secret(
    api_stub: APIStub, messages: list[OutgoingMessage], name: str, code: int
) -> None:
    api_stub.reply(code, recorded("ses", name))
    with pytest.raises(HTTPBackendError) as excinfo:
        make("ses", api_stub.url).send_messages(messages)
    error = excinfo.value
    assert error.status_code == code and len(api_stub.calls) == 1
    assert json.loads(recorded("ses", name))["message"][:40] in str(error)
    for leaked in (str(error), error.body or "", repr(error.payload), repr(error.args)):
        assert SECRET not in leaked and SECRET.replace("/", "%2F") not in leaked


# --- the SigV4 signer against AWS's published vectors ------------------------------------------

VECTOR_TIME = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
VECTOR_CREDENTIALS = sigv4.Credentials(AKID, SECRET)


@pytest.mark.parametrize(
    ("method", "url", "headers", "service", "signed", "signature"),
    [
        # aws-sig-v4-test-suite: get-vanilla, post-vanilla, get-vanilla-query-order-key-case
        ("GET", "https://example.amazonaws.com/", {}, "service", "host;x-amz-date",
         "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("POST", "https://example.amazonaws.com/", {}, "service", "host;x-amz-date",
         "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        ("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", {}, "service",
         "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        # the IAM ListUsers example of AWS's "Create a signed AWS API request" guide
        ("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
         {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, "iam",
         "content-type;host;x-amz-date",
         "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
    ],
)  # fmt: skip
def test_sigv4_reproduces_aws_test_vectors(
    method: str, url: str, headers: dict[str, str], service: str, signed: str, signature: str
) -> None:
    result = sigv4.sign(
        method, url, headers, b"", credentials=VECTOR_CREDENTIALS, region="us-east-1",
        service=service, now=VECTOR_TIME,
    )  # fmt: skip
    assert result["X-Amz-Date"] == "20150830T123600Z"
    assert result["Host"] == url.split("/")[2]
    assert result["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


def test_sigv4_intermediate_steps_match_the_published_values() -> None:
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    canonical, signed = sigv4.canonical_request(
        "GET", "https://example.amazonaws.com/", headers, sigv4.sha256_hex(b"")
    )
    assert signed == "host;x-amz-date"
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    scope = "20150830/us-east-1/service/aws4_request"
    assert sigv4.string_to_sign("20150830T123600Z", scope, canonical) == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )
    # the signing-key derivation example of AWS's SigV4 documentation
    key = sigv4.signing_key(SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_sigv4_canonical_headers_are_trimmed_lowercased_and_sorted() -> None:
    headers = {"X-B": "  two   words ", "x-a": "1", "Host": "h.example"}
    canonical, signed = sigv4.canonical_request("post", "https://h.example/a%20b", headers, "00")
    assert canonical == "POST\n/a%2520b\n\nhost:h.example\nx-a:1\nx-b:two words\n\nhost;x-a;x-b\n00"
    assert signed == "host;x-a;x-b"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8025/v2", "127.0.0.1:8025"),
        ("https://email.us-east-1.amazonaws.com/v2", "email.us-east-1.amazonaws.com"),
        ("https://email.us-east-1.amazonaws.com:443/v2", "email.us-east-1.amazonaws.com"),
        ("https://localhost:8443/", "localhost:8443"),
    ],
)
def test_sigv4_signs_the_host_header_a_client_sends(url: str, host: str) -> None:
    assert sigv4.host_header(url) == host


# --- URLs, options and descriptions ---------------------------------------------------------


def test_mailgun_url_options() -> None:
    eu = backend_from_url("mailgun://key-abc%2Fdef+g@MG.Example.com?region=eu&timeout=5")
    assert isinstance(eu, MailgunBackend)
    assert (eu._api_key, eu.domain, eu.timeout) == ("key-abc/def+g", "mg.example.com", 5.0)
    assert eu.messages_url == "https://api.eu.mailgun.net/v3/mg.example.com/messages.mime"

    us = backend_from_url("mailgun://key-abc@mg.example.com")
    assert isinstance(us, MailgunBackend) and us.timeout == 15.0
    assert us.messages_url == "https://api.mailgun.net/v3/mg.example.com/messages.mime"

    proxied = MailgunBackend.from_url(
        "mailgun://api:key-abc@mg.example.com?region=eu&endpoint=https://proxy.example/mg/"
    )
    assert proxied._api_key == "key-abc"
    assert proxied.messages_url == "https://proxy.example/mg/v3/mg.example.com/messages.mime"


def test_ses_url_options() -> None:
    backend = backend_from_url(
        "ses://AKIAEXAMPLE:ab%2Fc+d%3Ae@eu-west-1?configuration_set=weekly&timeout=7.5"
    )
    assert isinstance(backend, SESBackend)
    assert backend._credentials == sigv4.Credentials("AKIAEXAMPLE", "ab/c+d:e")
    assert backend._credentials.secret_access_key == "ab/c+d:e"
    assert (backend.region, backend.configuration_set, backend.timeout) == (
        "eu-west-1",
        "weekly",
        7.5,
    )
    assert backend.endpoint == "https://email.eu-west-1.amazonaws.com"
    assert "ab/c+d:e" not in repr(backend._credentials)

    local = SESBackend.from_url("ses://A:B@us-gov-west-1?endpoint=http://localhost:9000/")
    assert (local.endpoint, local.configuration_set) == ("http://localhost:9000", None)


@pytest.mark.parametrize(
    "url",
    [
        "mailgun://mg.example.com",  # no key
        "mailgun://S3CRETKEY@",  # no domain
        "mailgun://someone:S3CRETKEY@mg.example.com",  # user other than "api"
        "mailgun://S3CRETKEY@mg.example.com?region=ap",
        "mailgun://S3CRETKEY@mg.example.com?endpoint=http://api.example.com",  # clear text
        "mailgun://S3CRETKEY@mg.example.com?endpoint=ftp://127.0.0.1",
        "mailgun://S3CRETKEY@mg.example.com?endpoint=http://127.0.0.1:port",
        "mailgun://S3CRETKEY@mg.example.com?timeout=soon",
        "mailgun://S3CRETKEY@mg.example.com?timeout=0",
        "mailgun://S3CRETKEY@mg.example.com?timeout=nan",
        "mailgun://S3CRETKEY@mg.example.com?timeout=inf",
        "ses://us-east-1",  # no credentials
        "ses://AKID@us-east-1",  # no secret
        "ses://AKID:S3CRETKEY@email.example.com",  # not a region
        "ses://AKID:S3CRETKEY@us-east-1?endpoint=http://ses.example.com",
        "ses://AKID:S3CRETKEY@us-east-1?timeout=-1",
        "mailgun://S3CRETKEY@mg.example.com?regoin=eu",  # a typo is not ignored
        "ses://AKID:S3CRETKEY@us-east-1?configuraton_set=weekly",
    ],
)
def test_bad_urls_raise_backend_error_without_the_secret(url: str) -> None:
    with pytest.raises(BackendError) as excinfo:
        backend_from_url(url)
    assert "S3CRETKEY" not in str(excinfo.value)


def test_describe_hides_the_secrets() -> None:
    mailgun = backend_from_url(mailgun_url("https://api.eu.mailgun.net"))
    assert mailgun.describe() == "mailgun://***@mg.example.com via https://api.eu.mailgun.net"
    ses = backend_from_url(ses_url("https://ses.proxy.example", "&configuration_set=weekly"))
    assert ses.describe() == (
        "ses://AKIDEXAMPLE:***@us-east-1?configuration_set=weekly via https://ses.proxy.example"
    )
    for description in (mailgun.describe(), ses.describe()):
        for secret in SECRETS.values():
            assert secret not in description and quote(secret, safe="") not in description


# --- a whole edition, end to end ------------------------------------------------------------


@pytest.mark.parametrize("provider", ["mailgun", "ses"])
def test_send_edition_end_to_end(
    provider: str,
    api_stub: APIStub,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
) -> None:
    people = add_subscribers(5)
    template = json.loads(recorded(provider, "send-ok.json"))
    id_field = "id" if provider == "mailgun" else "MessageId"
    ids = [f"<{i}.{MG_ID[1:]}" if provider == "mailgun" else f"{SES_ID}-{i}" for i in range(5)]
    for provider_id in ids:  # one answer per request, in order
        api_stub.reply(200, json.dumps({**template, id_field: provider_id}))

    report = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"batch_size": 2}),
        backend=make(provider, api_stub.url),
    )

    assert report.run.sent == 5 and report.run.failed == report.run.deferred == 0
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts["queued"] == 5 and sum(counts.values()) == 5
    sent_to = [recipient_of(provider, call) for call in api_stub.calls]
    assert sorted(sent_to) == sorted(p.email for p in people)
    expected = dict(zip(sent_to, [i.strip("<>") for i in ids], strict=True))
    rows = seeded.exec(
        select(Subscriber.email, Delivery.provider_message_id)
        .join(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(Delivery.edition_id == draft)
    ).all()
    assert dict(rows) == expected


def test_ses_account_paused_mid_send_keeps_what_was_accepted(
    api_stub: APIStub,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
) -> None:
    """SES pauses an account mid-send (e.g. on bounces): the two messages it had accepted keep
    their MessageId, the rest go back to the queue, the edition is paused with the reason."""
    add_subscribers(4)
    accepted = [f"{SES_ID}-{i}" for i in range(2)]
    for provider_id in accepted:
        api_stub.reply(200, json.dumps({"MessageId": provider_id}))
    api_stub.reply(400, recorded("ses", "error-400-sending-paused.json"))

    with pytest.raises(HTTPBackendError) as excinfo:
        publish.send_edition(
            seeded,
            edition_id=draft,
            settings=settings.model_copy(update={"batch_size": 4}),
            backend=make("ses", api_stub.url),
        )

    assert [(r.status, r.provider_id) for r in excinfo.value.results] == [
        (SendStatus.queued, provider_id) for provider_id in accepted
    ]
    assert len(api_stub.calls) == 3, "nothing was sent after the refusal"
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts["queued"] == 2 and counts["pending"] == 2 and sum(counts.values()) == 4
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert edition.status == "paused"
    assert "SendingPausedException" in (edition.status_reason or "")
    assert SECRET not in (edition.status_reason or "")
    sent_to = [recipient_of("ses", call) for call in api_stub.calls[:2]]
    rows = seeded.exec(
        select(Subscriber.email, Delivery.provider_message_id)
        .join(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(Delivery.edition_id == draft, col(Delivery.provider_message_id).is_not(None))
    ).all()
    assert dict(rows) == dict(zip(sent_to, accepted, strict=True))
