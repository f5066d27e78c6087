"""The base for email-API backends: one fixed pipeline, each provider filling in the steps.

After django-anymail: build the request for one message -> post it on a reused
``requests.Session`` with a timeout -> turn the response into a :class:`SendResult`. A provider
subclass implements :meth:`build_request` and :meth:`parse_response` (and ``from_url``), in well
under 200 lines. The base decides what is transient and what is permanent:

- no connection (refused, connect timeout, DNS), or a connection lost before the request was
  written in full: ``deferred``, nothing was handed over, safe to retry;
- a timeout while waiting for the answer, or the connection lost after the request was written
  (see :mod:`newsletter.backends.wire`): ``unknown`` (the provider may have accepted it);
  providers that accept an idempotency key get ``message.key``, so a retry is harmless there;
- 429 and 5xx: ``deferred``, with the provider's ``Retry-After`` kept in the detail;
- 401 and 403: the credentials are wrong for every message, so :class:`HTTPBackendError` is
  raised (carrying the request payload and the response) instead of failing the whole list;
- other 4xx: whatever the provider's body says, ``rejected`` or ``invalid`` by default.

Secrets: the API key goes in a header or basic auth only; :meth:`describe` and errors never
include it.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import requests

from newsletter.backends.base import (
    BackendError,
    ProbeResult,
    ReportingBackend,
    SendResult,
    SendStatus,
    query_options,
)
from newsletter.backends.reach import probe_api
from newsletter.backends.wire import HandoverAdapter, on_written
from newsletter.edition.message import MessageContent, OutgoingMessage


@dataclass(frozen=True, slots=True)
class APIRequest:
    """One HTTP request to an email API."""

    url: str
    json: Any = None  # sent as JSON when set
    data: Mapping[str, Any] | None = None  # sent form-encoded (or multipart with files)
    files: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class APIURL:
    """A parsed email-API backend URL: ``scheme://CREDENTIAL@?endpoint=...&timeout=...``."""

    credential: str
    endpoint: str
    timeout: float
    options: dict[str, str]


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def endpoint_option(options: dict[str, str], default: str, provider: str) -> str:
    """``?endpoint=`` without a trailing slash, or ``default``: https, or http to loopback only.

    Plain http would send the credentials in clear, so it is allowed only to this machine.
    """
    endpoint = options.get("endpoint")
    if not endpoint:
        return default
    parts = urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise BackendError(f"{provider} ?endpoint= has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.username:
        raise BackendError(f"{provider} ?endpoint= must be an http(s) base URL (no query, no user)")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise BackendError(
            f"{provider} ?endpoint= must use https:// (http:// only to 127.0.0.1 or localhost)"
        )
    return endpoint.rstrip("/")


def check_options(options: dict[str, str], allowed: set[str], provider: str) -> None:
    """Refuse an unknown option: a typo (``?regoin=eu``) must not be silently ignored."""
    if unknown := sorted(set(options) - allowed):
        raise BackendError(f"{provider} backend URL: unknown option(s) {', '.join(unknown)}")


def timeout_option(options: dict[str, str], provider: str, default: float = 15.0) -> float:
    """``?timeout=`` in seconds: a finite positive number."""
    try:
        timeout = float(options.get("timeout", default))
    except ValueError:
        raise BackendError(f"{provider} ?timeout= is not a number of seconds") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise BackendError(f"{provider} ?timeout= must be a positive number of seconds")
    return timeout


def parse_api_url(
    url: str,
    *,
    provider: str,
    default_endpoint: str,
    credential: str = "API key",
    extra_options: frozenset[str] = frozenset(),
) -> APIURL:
    """Parse and check an API backend URL whose user part is the credential (percent-decoded).

    Errors name the problem but never quote the URL, which holds the key. A host part is
    refused (it would be a key typed in the wrong place); unknown options are refused.
    """
    userinfo, at, host = urlsplit(url).netloc.rpartition("@")
    placeholder = credential.upper().replace(" ", "_")
    if not at or not userinfo:
        raise BackendError(
            f"{provider} backend URL needs the {credential}: {provider}://{placeholder}@"
        )
    if host:
        raise BackendError(f"{provider} backend URL takes no host; use ?endpoint=https://...")
    options = query_options(url)
    check_options(options, {"endpoint", "timeout", *extra_options}, provider)
    return APIURL(
        unquote(userinfo),
        endpoint_option(options, default_endpoint.rstrip("/"), provider),
        timeout_option(options, provider),
        options,
    )


class HTTPBackendError(BackendError):
    """The API refused the whole backend (bad credentials, account disabled).

    Carries what was sent and what came back, with the credentials left out.
    """

    def __init__(self, message: str, *, payload: Any, response: requests.Response | None) -> None:
        super().__init__(message)
        self.payload = payload
        self.response = response
        self.status_code = response.status_code if response is not None else None
        self.body = response.text[:2000] if response is not None else None


class HTTPBackend(ReportingBackend):
    """Session reuse, timeouts, per-recipient status and error mapping for email APIs."""

    #: Human name of the provider, for messages.
    provider = "email API"
    #: Whether a 2xx means handed to the provider's queue (``queued``) or delivered onward.
    accepted_status = SendStatus.queued

    def __init__(self, *, timeout: float = 15.0, session: requests.Session | None = None) -> None:
        super().__init__()
        self.timeout = timeout
        self.session: requests.Session | None = session
        self._own_session = session is None

    def open(self) -> bool:
        if self.session is not None:
            return False
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "newsletter-engine"
        adapter = HandoverAdapter()  # tells when each request has left (the hand-over)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        return True

    def close(self) -> None:
        if self.session is not None and self._own_session:
            self.session.close()
            self.session = None

    @abstractmethod
    def build_request(self, message: OutgoingMessage) -> APIRequest:
        """The provider's request for one message."""

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Reach the API over TCP, then run :meth:`credential_check` if the provider has one
        (see :mod:`newsletter.backends.reach`); never sends mail."""
        return probe_api(self, timeout)

    def probe_base(self) -> str:
        """The API base URL whose host and port :meth:`probe` reaches."""
        return str(getattr(self, "endpoint", ""))

    def credential_check(self) -> APIRequest | None:
        """A harmless authenticated read (it never sends) whose 401/403 means the credentials
        are wrong, or None when the provider has none every sending key may do."""
        return None

    def credential_verdict(self, body: dict[str, Any]) -> ProbeResult | None:
        """A problem the credential check's 2xx body shows (a key without the right to send),
        or None when it shows none."""
        return None

    @abstractmethod
    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        """The result for a 2xx or a 4xx other than 401/403/429 (the base handles those)."""

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """One request per message; each answer is reported as it arrives, and each hand-over
        when its request has been written in full (a session this backend opened itself).
        On :class:`BackendError` ``exc.results`` holds the answers given before it."""
        opened_here = self.open()
        results: list[SendResult] = []
        try:
            for index, message in enumerate(messages):
                handed = None if on_handover is None else partial(on_handover, index)
                result = self._send_one(message, handed)
                results.append(result)
                on_result(index, result)
                if result.code == 429:
                    # Rate limited: the rest of the batch waits too instead of hammering the
                    # API with requests it has said it will refuse.
                    wait = SendResult(
                        SendStatus.deferred,
                        429,
                        f"{self.provider}: not sent, rate limited by an earlier request",
                        retry_after=result.retry_after,
                    )
                    for rest in range(len(results), len(messages)):
                        results.append(wait)
                        on_result(rest, wait)
                    break
            return results
        except BackendError as exc:
            exc.results = results  # what the provider already accepted must be recorded
            raise
        finally:
            if opened_here:
                self.close()

    def _send_one(
        self, message: OutgoingMessage, on_handover: Callable[[], None] | None = None
    ) -> SendResult:
        assert self.session is not None
        written = False

        def handed() -> None:
            nonlocal written
            written = True
            if on_handover is not None:
                on_handover()

        try:
            request = self.build_request(message)
        except (ValueError, KeyError) as exc:
            return SendResult(
                SendStatus.invalid, None, f"can't build {self.provider} request: {exc}"
            )
        try:
            with on_written(handed):
                response = self.session.request(
                    request.method,
                    request.url,
                    json=request.json,
                    data=request.data,
                    files=request.files,
                    headers=dict(request.headers),
                    timeout=self.timeout,
                )
        except requests.ConnectTimeout as exc:
            return SendResult(SendStatus.deferred, None, f"{self.provider}: connect timeout: {exc}")
        except requests.Timeout as exc:
            return SendResult(
                SendStatus.unknown, None, f"{self.provider}: no answer in time: {exc}"
            )
        except requests.ConnectionError as exc:
            if written:  # the whole request went out: the provider may have acted on it
                return SendResult(
                    SendStatus.unknown,
                    None,
                    f"{self.provider}: connection lost after the request was sent: {exc}",
                )
            return SendResult(
                SendStatus.deferred, None, f"{self.provider}: connection failed: {exc}"
            )
        code = response.status_code
        if code in (401, 403):
            raise HTTPBackendError(
                f"{self.provider} refused the credentials ({code}): {response.text[:300]}",
                payload=request.json if request.json is not None else request.data,
                response=response,
            )
        if code == 429 or code >= 500:
            retry_after = response.headers.get("Retry-After")
            detail = f"{self.provider} {code}: {response.text[:300]}"
            if retry_after:
                detail += f" (Retry-After: {retry_after})"
            return SendResult(
                SendStatus.deferred, code, detail, retry_after=parse_retry_after(retry_after)
            )
        return self.parse_response(message, response)

    # --- helpers for subclasses --------------------------------------------------------------

    @staticmethod
    def content(message: OutgoingMessage) -> MessageContent:
        if message.content is None:
            raise ValueError("this backend needs the message fields (OutgoingMessage.content)")
        return message.content

    @staticmethod
    def json_body(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            return {}
        return body if isinstance(body, dict) else {"value": body}

    def rejected(self, response: requests.Response, detail: str) -> SendResult:
        return SendResult(SendStatus.rejected, response.status_code, f"{self.provider}: {detail}")


class APIKeyBackend(HTTPBackend):
    """An API authenticated by one key, given as ``scheme://KEY@?endpoint=&timeout=``.

    Subclasses set ``provider`` and ``default_endpoint`` and build their requests with
    ``self._api_key`` and ``self.endpoint``.
    """

    default_endpoint = ""
    credential_name = "API key"

    def __init__(
        self,
        api_key: str,
        *,
        endpoint: str | None = None,
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(timeout=timeout, session=session)
        if not api_key:
            raise BackendError(f"{self.provider} backend needs an {self.credential_name}")
        self._api_key = api_key
        self.endpoint = (endpoint or self.default_endpoint).rstrip("/")

    @classmethod
    def from_url(cls, url: str) -> Self:
        parsed = parse_api_url(
            url,
            provider=cls.provider,
            default_endpoint=cls.default_endpoint,
            credential=cls.credential_name,
        )
        return cls(parsed.credential, endpoint=parsed.endpoint, timeout=parsed.timeout)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 10.2.3);
    None when absent or unreadable. Capped at a day, so a bogus date can't park a send."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 86_400.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), 86_400.0)
