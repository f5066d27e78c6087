"""Mailgun backend: the prepared MIME bytes posted as is to ``/v3/{domain}/messages.mime``.

URL: ``mailgun://API_KEY@DOMAIN?region=eu&timeout=15`` (percent-encode the key; ``api:KEY@`` is
accepted too). ``region`` is ``us`` (https://api.mailgun.net, the default) or ``eu``
(https://api.eu.mailgun.net); ``?endpoint=`` replaces the base URL (https, or http to
127.0.0.1/localhost for a local test server); unknown options are refused. Contract: one
multipart POST per message with basic auth ``api:KEY``, form field ``to`` (the envelope
recipient) and file ``message`` (the MIME bytes, unchanged). 2xx -> ``queued`` with Mailgun's
``id``; 400 -> ``invalid`` with Mailgun's message; 404 (unknown sending domain) raises
:class:`HTTPBackendError`, since no message can be sent; other 4xx -> ``rejected``; 401/403,
429/5xx and network errors are handled by :class:`HTTPBackend`. The key goes in the
Authorization header only, never in :meth:`describe` or an error.
"""

from __future__ import annotations

import base64
from typing import Self
from urllib.parse import quote, unquote, urlsplit

import requests

from newsletter.backends.base import BackendError, SendResult, SendStatus, query_options
from newsletter.backends.http import (
    APIRequest,
    HTTPBackend,
    HTTPBackendError,
    check_options,
    endpoint_option,
    timeout_option,
)
from newsletter.edition.message import OutgoingMessage

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


class MailgunBackend(HTTPBackend):
    """Sends each :class:`OutgoingMessage` through Mailgun's MIME endpoint."""

    schemes = ("mailgun",)
    provider = "Mailgun"

    def __init__(
        self,
        *,
        api_key: str,
        domain: str,
        base_url: str = REGIONS["us"],
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(timeout=timeout, session=session)
        self.domain = domain
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        token = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Parse ``mailgun://API_KEY@DOMAIN?region=&endpoint=&timeout=``; never echoes the key."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise BackendError("Mailgun backend URL needs the sending domain: mailgun://KEY@DOMAIN")
        username = unquote(parts.username or "")
        password = unquote(parts.password) if parts.password is not None else None
        if password is not None and username != "api":
            raise BackendError("Mailgun backend URL: write the API key as mailgun://KEY@DOMAIN")
        api_key = password if password is not None else username
        if not api_key:
            raise BackendError("Mailgun backend URL needs the API key: mailgun://KEY@DOMAIN")
        options = query_options(url)
        check_options(options, {"region", "endpoint", "timeout"}, "Mailgun")
        region = options.get("region", "us").lower()
        if region not in REGIONS:
            raise BackendError(f"Mailgun ?region={region!r}: expected one of {sorted(REGIONS)}")
        return cls(
            api_key=api_key,
            domain=parts.hostname,
            base_url=endpoint_option(options, REGIONS[region], "Mailgun"),
            timeout=timeout_option(options, "Mailgun"),
        )

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/v3/{quote(self.domain, safe='')}/messages.mime"

    def build_request(self, message: OutgoingMessage) -> APIRequest:
        """A multipart POST: ``to`` = the envelope recipient, ``message`` = the MIME bytes."""
        return APIRequest(
            url=self.messages_url,
            data={"to": message.recipient},
            files={"message": ("message.mime", message.data)},
            headers={"Authorization": self._authorization},
        )

    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        """2xx -> queued with Mailgun's id; 400 -> invalid; 404 raises; other 4xx -> rejected."""
        body = self.json_body(response)
        code = response.status_code
        detail = str(body.get("message") or response.text[:300]).strip()
        if 200 <= code < 300:
            # Stored without the angle brackets Mailgun's answer has: its webhooks name the
            # message that way, and bounces are matched to deliveries by this id.
            provider_id = str(body.get("id") or "").strip().strip("<>")
            return SendResult(self.accepted_status, code, detail, provider_id or None)
        if code == 404:
            raise HTTPBackendError(
                f"Mailgun can't send for domain {self.domain} (404): {detail}",
                payload={"to": message.recipient},
                response=response,
            )
        if code == 400:
            return SendResult(SendStatus.invalid, code, f"Mailgun: {detail}")
        return self.rejected(response, detail)

    def probe_base(self) -> str:
        return self.base_url

    def describe(self) -> str:
        return f"mailgun://***@{self.domain} via {self.base_url}"
