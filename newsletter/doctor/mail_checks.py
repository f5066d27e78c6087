"""Checks of the mail backend: SMTP opened and closed, email APIs reached, folders writable."""

from __future__ import annotations

import smtplib
import socket
import ssl
from urllib.parse import urlsplit

import requests

from newsletter.backends import BackendError, MailBackend, available_schemes, backend_from_url
from newsletter.backends.console import ConsoleBackend
from newsletter.backends.failover import FailoverBackend
from newsletter.backends.file import FileBackend
from newsletter.backends.http import LOOPBACK, HTTPBackend
from newsletter.backends.memory import MemoryBackend
from newsletter.backends.postmark import PostmarkBackend
from newsletter.backends.sendgrid import SendGridBackend
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import Settings
from newsletter.doctor.check import MAIL_FIX, Check
from newsletter.doctor.settings_checks import unwritable

# --- mail ----------------------------------------------------------------------------------


def check_mail_backend(settings: Settings, timeout: float) -> list[Check]:
    try:
        backend = backend_from_url(settings.mail_backend)
    except BackendError as exc:
        schemes = ", ".join(f"{s}://" for s in available_schemes())
        fix = f"Set NEWSLETTER_MAIL_BACKEND to a URL starting with one of {schemes}."
        return [Check("mail backend", False, f"NEWSLETTER_MAIL_BACKEND: {exc}", fix)]
    backends = backend.backends if isinstance(backend, FailoverBackend) else [backend]
    if len(backends) == 1:
        return [_probe("mail backend", backend, timeout)]
    return [
        _probe(f"mail backend {n}/{len(backends)}", b, timeout) for n, b in enumerate(backends, 1)
    ]


def _probe(name: str, backend: MailBackend, timeout: float) -> Check:
    """Reach the backend as far as possible without sending anything."""
    if isinstance(backend, SMTPBackend):
        return _probe_smtp(name, backend, timeout)
    if isinstance(backend, HTTPBackend):
        return _probe_api(name, backend, timeout)
    local = "no mail leaves this machine (fine for development, not for production)"
    if isinstance(backend, FileBackend):  # before ConsoleBackend, its base class
        problem = unwritable(backend.directory)
        fix = "Point NEWSLETTER_MAIL_BACKEND at a folder this user can write, or at a real server."
        if problem:
            return Check(name, False, f"{backend.describe()}: {problem}", fix)
        return Check(name, None, f"{backend.describe()} is writable; {local}", fix)
    fix = "Set NEWSLETTER_MAIL_BACKEND to smtp://... or an email API to send for real."
    if isinstance(backend, ConsoleBackend | MemoryBackend):
        return Check(name, None, f"{backend.describe()}: {local}", fix)
    if backend.open():  # a third-party backend: its contract is all we know
        backend.close()
    return Check(name, None, f"{backend.describe()} opened and closed; not checked further")


def _probe_smtp(name: str, backend: SMTPBackend, timeout: float) -> Check:
    backend.timeout = min(backend.timeout, timeout)
    try:
        backend.open()
    except BackendError as exc:
        cause = exc.__cause__
        fix = MAIL_FIX
        if isinstance(cause, smtplib.SMTPAuthenticationError):
            fix = "The server refused the login: check the user and password in "
            fix += "NEWSLETTER_MAIL_BACKEND (percent-encode special characters)."
        elif isinstance(cause, smtplib.SMTPNotSupportedError):
            fix = "The server offers no login here: most want ?starttls=1 (port 587) or "
            fix += "smtps:// (port 465) in NEWSLETTER_MAIL_BACKEND first."
        elif isinstance(cause, ssl.SSLError):
            fix = "TLS failed: check smtps:// versus ?starttls=1 and the port in "
            fix += "NEWSLETTER_MAIL_BACKEND (?verify=0 only for a test server)."
        return Check(name, False, str(exc), fix)
    backend.close()
    tls = backend.use_ssl or backend.starttls
    found = f"{backend.describe()}: connected, {'TLS' if tls else 'no TLS'}, "
    found += f"logged in as {backend.username}" if backend.username else "no login"
    if backend.username and not tls and backend.host not in LOOPBACK:
        fix = "Add ?starttls=1 (or use smtps://) in NEWSLETTER_MAIL_BACKEND."
        return Check(name, None, found + ": the password crossed the network in clear", fix)
    return Check(name, True, found)


def _probe_api(name: str, backend: HTTPBackend, timeout: float) -> Check:
    endpoint = urlsplit(str(getattr(backend, "endpoint", "") or getattr(backend, "base_url", "")))
    host = endpoint.hostname or ""
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        summary = f"{backend.describe()}: can't reach {host}:{port}: {exc}"
        fix = f"Check DNS and the outbound firewall for {host}:{port}, or ?endpoint= in "
        return Check(name, False, summary, fix + "NEWSLETTER_MAIL_BACKEND.")
    request = _credential_probe(backend)
    if request is None:
        summary = f"{backend.describe()}: {host}:{port} answers; credentials are not verified "
        fix = "Send a test edition to your own address: the doctor never sends mail."
        return Check(name, None, summary + "(that would need a real send)", fix)
    url, headers = request
    try:
        response = requests.get(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        summary = f"{backend.describe()}: the credential check failed: {type(exc).__name__}"
        return Check(name, False, summary, MAIL_FIX)
    code = response.status_code
    fix = "Check the API key or token in NEWSLETTER_MAIL_BACKEND (percent-encoded user part)."
    if code in (401, 403):
        return Check(name, False, f"{backend.describe()}: credentials refused ({code})", fix)
    if not response.ok:
        return Check(name, None, f"{backend.describe()}: the credential check answered {code}")
    body = HTTPBackend.json_body(response)
    if isinstance(backend, SendGridBackend) and "mail.send" not in body.get("scopes", []):
        fix = "Give the SendGrid API key the Mail Send permission, or use one that has it."
        return Check(name, False, f"{backend.describe()}: the key can't send mail", fix)
    return Check(name, True, f"{backend.describe()}: credentials accepted (checked with GET)")


def _credential_probe(backend: HTTPBackend) -> tuple[str, dict[str, str]] | None:
    """A harmless authenticated GET for providers that have one (it reads, never sends).

    Postmark's ``GET /server`` reads the server the token belongs to; SendGrid's
    ``GET /v3/scopes`` lists the key's own permissions. Resend, Mailgun and SES offer no read
    that every sending key is allowed, so a refusal there would not mean the key can't send.
    """
    if isinstance(backend, PostmarkBackend):
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": backend._token}
        return f"{backend.endpoint}/server", headers
    if isinstance(backend, SendGridBackend):
        return f"{backend.endpoint}/v3/scopes", {"Authorization": f"Bearer {backend._api_key}"}
    return None
