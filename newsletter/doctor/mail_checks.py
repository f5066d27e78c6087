"""Checks of the mail backend: whatever it is, its own ``probe()`` says how it stands.

The doctor knows no backend's insides: each one (SMTP opens and closes, email APIs are reached
and, where the provider has a harmless read, asked it, folders are tested) answers through
:meth:`newsletter.backends.MailBackend.probe`, so a plugin backend is checked like a built-in.
"""

from __future__ import annotations

from newsletter.backends import BackendError, MailBackend, available_schemes, backend_from_url
from newsletter.backends.failover import FailoverBackend
from newsletter.config import Settings
from newsletter.doctor.check import Check


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
    """The backend's probe as a check; a probe that breaks (a plugin's bug) is a failure that
    names the backend, not a crash of the doctor."""
    try:
        found = backend.probe(timeout)
    except Exception as exc:
        summary = f"{backend.describe()}: its probe broke: {type(exc).__name__}: {exc}"
        return Check(name, False, summary, "Report it to the backend's authors.")
    return Check(name, found.ok, found.summary, found.hint)
