"""Probing an email API without sending: a TCP connection, then a harmless authenticated read.

:meth:`HTTPBackend.probe <newsletter.backends.http.HTTPBackend.probe>` runs this. A provider
that has a read every sending key may do (Postmark ``GET /server``, SendGrid
``GET /v3/scopes``) returns it from ``credential_check()``; the others are only reached, since
a refusal of some other read would not mean the key can't send.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from newsletter.backends.base import ProbeResult

if TYPE_CHECKING:
    from newsletter.backends.http import HTTPBackend

UNREACHABLE_HINT = (
    "Check the host and port in NEWSLETTER_MAIL_BACKEND and that the server accepts "
    "connections from this machine."
)


def probe_api(backend: HTTPBackend, timeout: float) -> ProbeResult:
    """Reach ``backend``'s API host, then ask its credential check if it has one."""
    endpoint = urlsplit(backend.probe_base())
    host = endpoint.hostname or ""
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    name = backend.describe()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        hint = f"Check DNS and the outbound firewall for {host}:{port}, or ?endpoint= in "
        return ProbeResult(False, f"{name}: can't reach {host}:{port}: {exc}", hint + _VARIABLE)
    request = backend.credential_check()
    if request is None:
        summary = f"{name}: {host}:{port} answers; credentials are not verified "
        hint = "Send a test edition to your own address: the doctor never sends mail."
        return ProbeResult(None, summary + "(that would need a real send)", hint)
    try:
        response = requests.request(
            request.method, request.url, headers=dict(request.headers), timeout=timeout
        )
    except requests.RequestException as exc:
        summary = f"{name}: the credential check failed: {type(exc).__name__}"
        return ProbeResult(False, summary, UNREACHABLE_HINT)
    code = response.status_code
    if code in (401, 403):
        hint = "Check the API key or token in NEWSLETTER_MAIL_BACKEND (percent-encoded user part)."
        return ProbeResult(False, f"{name}: credentials refused ({code})", hint)
    if not response.ok:
        return ProbeResult(None, f"{name}: the credential check answered {code}")
    verdict = backend.credential_verdict(backend.json_body(response))
    return verdict or ProbeResult(True, f"{name}: credentials accepted (checked with GET)")


_VARIABLE = "NEWSLETTER_MAIL_BACKEND."
