"""Postmark backend: one ``POST /email`` per message, on the broadcast message stream.

URL: ``postmark://SERVER_TOKEN@?stream=broadcast&timeout=15&endpoint=https://...``. The server
token is the URL's user part, percent-decoded (percent-encode ``/``, ``@``, ``#``, ``?``).
``?stream=`` is the MessageStream, ``broadcast`` by default: Postmark keeps newsletters apart
from transactional mail, and the stream's own unsubscribe handling should be set to "none",
since the engine sends its own List-Unsubscribe headers and links. ``?endpoint=`` replaces the
API base URL (``https://api.postmarkapp.com``); ``http://`` is allowed only for 127.0.0.1 and
localhost (tests). ``?timeout=`` is in seconds.

Results: 200 with ``ErrorCode`` 0 is ``queued`` with Postmark's ``MessageID`` as the provider
id. A 422 is read by ``ErrorCode``: 406 (inactive recipient: hard bounce, complaint or manual
suppression) is ``rejected``; 300 (invalid email request) and the other message-level codes
are ``invalid``; the account-wide codes (sender signature missing or unconfirmed, not allowed
to send, account pending or disabled) raise :class:`HTTPBackendError`, like 401/403, because
every other message would fail the same way. Postmark has no idempotency key.

Our Message-ID goes in ``Headers`` with List-Id and List-Unsubscribe(-Post): Postmark may
replace it with its own, but when kept it matches the ``message_id`` the ledger stores and
the one SMTP sends carry, and sending it costs nothing when ignored.
"""

from __future__ import annotations

import json
from email.headerregistry import Address
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from newsletter.backends.base import BackendError, SendResult, SendStatus
from newsletter.backends.http import APIRequest, HTTPBackend, HTTPBackendError, parse_api_url
from newsletter.edition.message import OutgoingMessage

DEFAULT_ENDPOINT = "https://api.postmarkapp.com"
#: ErrorCodes that refuse the server or account, not this message.
ACCOUNT_ERRORS = frozenset({10, 400, 401, 405, 412, 413})
INACTIVE_RECIPIENT = 406


def _address(name: str | None, email: str) -> str:
    """``Name <email>``, the name quoted when needed and kept in UTF-8 (JSON, not MIME)."""
    local, _, domain = email.rpartition("@")
    return str(Address(" ".join((name or "").split()), local, domain))


def _sent_payload(response: requests.Response) -> Any:
    """The JSON that was posted, for :class:`HTTPBackendError` (it never holds the token)."""
    body = response.request.body if response.request is not None else None
    if not isinstance(body, (str, bytes)):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class PostmarkBackend(HTTPBackend):
    """Postmark's single-message email API (``POST /email``) over a reused session."""

    schemes = ("postmark",)
    provider = "postmark"

    def __init__(
        self,
        token: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        stream: str = "broadcast",
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(timeout=timeout, session=session)
        if not token:
            raise BackendError("postmark backend needs a server token")
        self._token = token
        self.endpoint = endpoint.rstrip("/")
        self.stream = stream

    @classmethod
    def from_url(cls, url: str) -> Self:
        parsed = parse_api_url(
            url,
            provider="postmark",
            default_endpoint=DEFAULT_ENDPOINT,
            credential="server token",
            extra_options=frozenset({"stream"}),
        )
        token, endpoint, timeout = parsed.credential, parsed.endpoint, parsed.timeout
        stream = parsed.options.get("stream", "broadcast")
        if not stream:
            raise BackendError("postmark backend URL: ?stream= is empty")
        return cls(token, endpoint=endpoint, stream=stream, timeout=timeout)

    def build_request(self, message: OutgoingMessage) -> APIRequest:
        content = self.content(message)
        html, text = content.bodies()
        payload = {
            "From": _address(content.from_name, content.from_email),
            "To": _address(content.to_name, content.to_email),
            "Subject": content.subject,
            "HtmlBody": html,
            "TextBody": text,
            "MessageStream": self.stream,
            "Headers": [{"Name": name, "Value": value} for name, value in content.headers.items()],
        }
        if content.reply_to:
            payload["ReplyTo"] = _address(*content.reply_to)
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self._token}
        return APIRequest(url=f"{self.endpoint}/email", json=payload, headers=headers)

    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        body = self.json_body(response)
        error_code = body.get("ErrorCode")
        text = str(body.get("Message") or response.text[:300])
        if response.ok and error_code in (0, None):
            provider_id = body.get("MessageID")
            return SendResult(
                self.accepted_status,
                response.status_code,
                text,
                provider_id=str(provider_id) if provider_id else None,
            )
        if error_code in ACCOUNT_ERRORS:
            raise HTTPBackendError(
                f"postmark refused the account (ErrorCode {error_code}): {text}",
                payload=_sent_payload(response),
                response=response,
            )
        status = SendStatus.rejected if error_code == INACTIVE_RECIPIENT else SendStatus.invalid
        detail = f"postmark {response.status_code} (ErrorCode {error_code}): {text}"
        return SendResult(status, response.status_code, detail)

    def credential_check(self) -> APIRequest:
        """``GET /server`` reads the server the token belongs to."""
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self._token}
        return APIRequest(url=f"{self.endpoint}/server", headers=headers, method="GET")

    def describe(self) -> str:
        host = urlsplit(self.endpoint).netloc.rpartition("@")[2]
        return f"postmark ({host}, stream={self.stream})"
