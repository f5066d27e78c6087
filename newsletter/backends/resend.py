"""Resend backend: one ``POST /emails`` per message, with the message's idempotency key.

URL: ``resend://API_KEY@?timeout=15&endpoint=https://...``. The API key is the URL's user
part, percent-decoded (percent-encode ``/``, ``@``, ``#``, ``?``); a "sending access" key is
enough. ``?endpoint=`` replaces the API base URL (``https://api.resend.com``); ``http://`` is
allowed only for 127.0.0.1 and localhost (tests). ``?timeout=`` is in seconds.

Request: ``from``, ``to``, ``subject``, ``html``, ``text`` and ``headers`` (Message-ID,
List-Id, List-Unsubscribe, List-Unsubscribe-Post), with ``Idempotency-Key: message.key``:
for 24 hours Resend answers a repeat of the same key and payload with the first answer and
sends nothing, so a retry after a lost answer cannot mail anyone twice.

Results: 200 ``{"id": ...}`` is ``queued`` with that id. 400 and 422 (``validation_error``,
``missing_required_field``, ``invalid_idempotency_key``...) are ``invalid``; other 4xx are
``rejected``; Resend's ``name`` and ``message`` go in the detail. 409
``concurrent_idempotent_requests`` (the same key still in flight) is ``deferred``; 409
``invalid_idempotent_request`` (the key already sent a different payload within 24 hours) is
``unknown``: that earlier send may have reached the recipient. 429 (``rate_limit_exceeded``,
``daily_quota_exceeded``) is deferred by the base with Resend's ``Retry-After``.
"""

from __future__ import annotations

from email.headerregistry import Address
from urllib.parse import urlsplit

import requests

from newsletter.backends.base import SendResult, SendStatus
from newsletter.backends.http import APIKeyBackend, APIRequest
from newsletter.edition.message import OutgoingMessage

DEFAULT_ENDPOINT = "https://api.resend.com"


def _address(name: str | None, email: str) -> str:
    """``Name <email>``, the name quoted when needed and kept in UTF-8 (JSON, not MIME)."""
    local, _, domain = email.rpartition("@")
    return str(Address(" ".join((name or "").split()), local, domain))


class ResendBackend(APIKeyBackend):
    """Resend's send-email API over a reused session."""

    schemes = ("resend",)
    provider = "resend"
    default_endpoint = DEFAULT_ENDPOINT

    def build_request(self, message: OutgoingMessage) -> APIRequest:
        content = self.content(message)
        html, text = content.bodies()
        payload = {
            "from": _address(content.from_name, content.from_email),
            "to": [_address(content.to_name, content.to_email)],
            "subject": content.subject,
            "html": html,
            "text": text,
            "headers": dict(content.headers),
        }
        if content.reply_to:
            payload["reply_to"] = _address(*content.reply_to)
        headers = {"Authorization": f"Bearer {self._api_key}", "Idempotency-Key": message.key}
        return APIRequest(url=f"{self.endpoint}/emails", json=payload, headers=headers)

    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        code = response.status_code
        body = self.json_body(response)
        if response.ok:
            provider_id = body.get("id")
            return SendResult(
                self.accepted_status,
                code,
                "accepted",
                provider_id=str(provider_id) if provider_id else None,
            )
        name = str(body.get("name") or "error")
        detail = f"resend {code} {name}: {body.get('message') or response.text[:300]}"
        if name == "concurrent_idempotent_requests":
            return SendResult(SendStatus.deferred, code, detail)
        if name == "invalid_idempotent_request":
            return SendResult(SendStatus.unknown, code, detail)
        status = SendStatus.invalid if code in (400, 422) else SendStatus.rejected
        return SendResult(status, code, detail)

    def describe(self) -> str:
        return f"resend ({urlsplit(self.endpoint).netloc.rpartition('@')[2]})"
