"""Amazon SES backend over the SES v2 HTTPS API (``SendEmail`` with raw content), not SMTP.

Why not SES's SMTP interface: that already works through smtp:// (with SMTP credentials derived
from an IAM key). The API takes the IAM key itself (SigV4-signed), runs on HTTPS port 443, names
its errors (``MessageRejected`` vs throttling vs a paused account, not bare reply codes), takes
the configuration set as a field and returns the ``MessageId`` that SES bounce and complaint
events carry, stored as the delivery's provider id.

URL: ``ses://ACCESS_KEY_ID:SECRET@REGION?configuration_set=NAME&timeout=15`` (percent-encode the
secret: ``/`` as ``%2F``); ``?endpoint=`` replaces ``https://email.REGION.amazonaws.com``
(https, or http to 127.0.0.1/localhost); unknown options are refused. Contract: one signed POST
to ``/v2/email/outbound-emails`` per message with ``FromEmailAddress`` (envelope sender),
``Destination.ToAddresses`` (the recipient), ``Content.Raw.Data`` (base64 of the MIME bytes,
unchanged) and the configuration set. 2xx -> ``queued`` with the ``MessageId``; throttling ->
``deferred``; ``BadRequestException`` -> ``invalid``; ``MessageRejected`` and other 4xx ->
``rejected``; a paused or suspended account, an unverified MAIL FROM domain or an unknown
configuration set raise :class:`HTTPBackendError` (no message would get through); 401/403,
429/5xx and network errors are :class:`HTTPBackend`'s. The secret never appears in
:meth:`describe` or an error.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

import requests

from newsletter.backends import sigv4
from newsletter.backends.base import BackendError, SendResult, SendStatus, query_options
from newsletter.backends.http import (
    APIRequest,
    HTTPBackend,
    HTTPBackendError,
    check_options,
    endpoint_option,
    timeout_option,
)
from newsletter.backends.sigv4 import sha256_hex
from newsletter.edition.message import OutgoingMessage

PATH = "/v2/email/outbound-emails"
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
THROTTLING = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "ThrottlingException", "Throttling"}
)
#: No message can get through: stop (dispatch records what was accepted and pauses the edition).
WHOLE_ACCOUNT = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # the configuration set does not exist
    }
)


def error_type(response: requests.Response, body: dict[str, Any]) -> str:
    """The AWS error type from ``X-Amzn-ErrorType``, or ``__type``/``code`` in the body."""
    raw = response.headers.get("X-Amzn-ErrorType") or body.get("__type") or body.get("code")
    return str(raw or "").split(":")[0].rsplit("#", 1)[-1]


class SESBackend(HTTPBackend):
    """Sends each :class:`OutgoingMessage` as raw MIME through SES v2 ``SendEmail``."""

    schemes = ("ses",)
    provider = "Amazon SES"

    def __init__(
        self,
        *,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        configuration_set: str | None = None,
        endpoint: str | None = None,
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(timeout=timeout, session=session)
        self.region = region
        self.configuration_set = configuration_set
        self.endpoint = (endpoint or f"https://email.{region}.amazonaws.com").rstrip("/")
        self._credentials = sigv4.Credentials(access_key_id, secret_access_key)

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Parse ``ses://KEY_ID:SECRET@REGION?...``; never echoes the secret."""
        parts = urlsplit(url)
        region = parts.hostname or ""
        if not _REGION.fullmatch(region):
            raise BackendError("SES backend URL needs an AWS region: ses://KEY_ID:SECRET@us-east-1")
        if not parts.username or not parts.password:
            raise BackendError("SES backend URL needs the access key: ses://KEY_ID:SECRET@REGION")
        options = query_options(url)
        check_options(options, {"configuration_set", "endpoint", "timeout"}, "SES")
        return cls(
            access_key_id=unquote(parts.username),
            secret_access_key=unquote(parts.password),
            region=region,
            configuration_set=options.get("configuration_set") or None,
            endpoint=endpoint_option(options, "", "SES") or None,
            timeout=timeout_option(options, "SES"),
        )

    def build_request(self, message: OutgoingMessage) -> APIRequest:
        """The JSON body, serialized here so the signature covers the exact bytes sent."""
        payload: dict[str, Any] = {
            "FromEmailAddress": message.sender,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(message.data).decode("ascii")}},
        }
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        url = self.endpoint + PATH
        headers = {"Content-Type": "application/json", "X-Amz-Content-Sha256": sha256_hex(body)}
        signed = sigv4.sign(
            "POST",
            url,
            headers,
            body,
            credentials=self._credentials,
            region=self.region,
            service="ses",
        )
        # requests sends bytes given as `data` unchanged; APIRequest.data is typed for forms.
        return APIRequest(url=url, data=cast(Any, body), headers=signed)

    def parse_response(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        """2xx -> queued with the MessageId; AWS error types mapped as in the module doc."""
        body = self.json_body(response)
        code = response.status_code
        if 200 <= code < 300:
            message_id = body.get("MessageId")
            return SendResult(
                self.accepted_status, code, "accepted", str(message_id) if message_id else None
            )
        kind = error_type(response, body)
        text = str(body.get("message") or body.get("Message") or response.text[:300]).strip()
        detail = f"{kind}: {text}" if kind else text
        if kind in THROTTLING:
            return SendResult(SendStatus.deferred, code, f"{self.provider} {code}: {detail}")
        if kind in WHOLE_ACCOUNT or code == 404:
            raise HTTPBackendError(
                f"{self.provider} can't send for this account ({code}): {detail}",
                payload=response.request.body,
                response=response,
            )
        if kind == "BadRequestException":
            return SendResult(SendStatus.invalid, code, f"{self.provider}: {detail}")
        return self.rejected(response, detail)

    def describe(self) -> str:
        key_id = self._credentials.access_key_id
        options = f"?configuration_set={self.configuration_set}" if self.configuration_set else ""
        return f"ses://{key_id}:***@{self.region}{options} via {self.endpoint}"
