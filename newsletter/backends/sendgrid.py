"""SendGrid backend: one ``POST /v3/mail/send`` per message (Web API v3).

URL: ``sendgrid://API_KEY@?timeout=15&endpoint=https://...``. The API key is the URL's user
part, percent-decoded (percent-encode ``/``, ``@``, ``#``, ``?``); it needs the "Mail Send"
permission. ``?endpoint=`` replaces the API base URL (``https://api.sendgrid.com``, or
``https://api.eu.sendgrid.com`` for EU-pinned accounts); ``http://`` is allowed only for
127.0.0.1 and localhost (tests). ``?timeout=`` is in seconds.

Request: one personalization with the single recipient, ``content`` as text/plain then
text/html (SendGrid requires that order), and the message's headers (Message-ID, List-Id,
List-Unsubscribe, List-Unsubscribe-Post) in ``headers``. SendGrid refuses the whole request
with a 400 if ``headers`` names a reserved header (To, From, Subject, Reply-To, Cc, Bcc,
Content-Type, Content-Transfer-Encoding, DKIM-Signature, Received, X-SG-ID, X-SG-EID), so
those are dropped: the JSON fields already carry them. SendGrid has no idempotency key.

Results: 202 (empty body) is ``queued`` with the ``X-Message-Id`` response header as the
provider id (the prefix of ``sg_message_id`` in SendGrid's events). 400 and 413 are
``invalid``, other 4xx ``rejected``, with SendGrid's ``errors`` messages in the detail.
SendGrid reports most per-recipient problems (suppressions, bounces) later, as events.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from newsletter.backends.base import ProbeResult, SendResult, SendStatus
from newsletter.backends.http import APIKeyBackend, APIRequest
from newsletter.edition.message import OutgoingMessage

DEFAULT_ENDPOINT = "https://api.sendgrid.com"
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)


def _person(name: str | None, email: str) -> dict[str, str]:
    name = " ".join((name or "").split())
    return {"email": email, "name": name} if name else {"email": email}


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    message = str(error.get("message") or "")
    return f"{error['field']}: {message}" if error.get("field") else message


class SendGridBackend(APIKeyBackend):
    """SendGrid's v3 Mail Send API over a reused session."""

    schemes = ("sendgrid",)
    provider = "sendgrid"
    default_endpoint = DEFAULT_ENDPOINT

    def build_request(self, message: OutgoingMessage) -> APIRequest:
        content = self.content(message)
        html, text = content.bodies()
        payload = {
            "personalizations": [{"to": [_person(content.to_name, content.to_email)]}],
            "from": _person(content.from_name, content.from_email),
            "subject": content.subject,
            "content": [
                {"type": "text/plain", "value": text},
                {"type": "text/html", "value": html},
            ],
            "headers": {
                name: value
                for name, value in content.headers.items()
                if name.lower() not in RESERVED_HEADERS
            },
        }
        if content.reply_to:
            payload["reply_to"] = _person(*content.reply_to)
        headers = {"Authorization": f"Bearer {self._api_key}"}
        return APIRequest(url=f"{self.endpoint}/v3/mail/send", json=payload, headers=headers)

    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        code = response.status_code
        if response.ok:
            provider_id = response.headers.get("X-Message-Id") or None
            return SendResult(self.accepted_status, code, "accepted", provider_id=provider_id)
        errors = self.json_body(response).get("errors")
        texts = [_error_text(e) for e in errors] if isinstance(errors, list) else []
        detail = "; ".join(t for t in texts if t) or response.text[:300]
        status = SendStatus.invalid if code in (400, 413) else SendStatus.rejected
        return SendResult(status, code, f"sendgrid {code}: {detail}")

    def credential_check(self) -> APIRequest:
        """``GET /v3/scopes`` lists the key's own permissions."""
        headers = {"Authorization": f"Bearer {self._api_key}"}
        return APIRequest(url=f"{self.endpoint}/v3/scopes", headers=headers, method="GET")

    def credential_verdict(self, body: dict[str, Any]) -> ProbeResult | None:
        if "mail.send" in body.get("scopes", []):
            return None
        hint = "Give the SendGrid API key the Mail Send permission, or use one that has it."
        return ProbeResult(False, f"{self.describe()}: the key can't send mail", hint)

    def describe(self) -> str:
        return f"sendgrid ({urlsplit(self.endpoint).netloc.rpartition('@')[2]})"
