"""Health checks for operators (``newsletter doctor``): is this setup ready to send?

Each check looks at one thing an edition needs (settings, secret key, database, mail backend,
journal, web endpoints) and returns a :class:`Check` saying what it found and, when something
is wrong, how to fix it, naming the ``NEWSLETTER_`` variable. :func:`run_checks` never raises:
a check that breaks is reported as failed, so one broken thing never hides the others.

Nothing is sent and nothing is created: SMTP servers are opened and closed (EHLO, STARTTLS and
AUTH when configured); email APIs are reached over TCP and, where the provider has one, asked a
harmless authenticated GET (Postmark ``GET /server``, SendGrid ``GET /v3/scopes``); folders are
tested with a temporary file that vanishes. A missing SQLite file is reported, not created.

Secrets never reach a summary: backends speak through ``describe()``, database URLs are rendered
with the password hidden, and every text is scrubbed of the configured secrets as a last guard,
since a driver's error message may quote more than expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from newsletter.config import Settings
from newsletter.doctor.bounce_checks import check_bounces
from newsletter.doctor.check import LABELS, Check, Step
from newsletter.doctor.database_checks import check_database
from newsletter.doctor.dkim_checks import check_dkim
from newsletter.doctor.dns_checks import check_dns
from newsletter.doctor.mail_checks import check_mail_backend
from newsletter.doctor.settings_checks import (
    check_admin_page,
    check_configuration,
    check_journal,
    check_secret_key,
    check_webhooks,
)
from newsletter.doctor.writer_checks import check_writer
from newsletter.sending.redaction import Redactor, redactor_for

__all__ = ["Check", "exit_code", "render", "run_checks"]


def run_checks(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    """Every check, in order; never raises. ``timeout`` bounds each network wait, in seconds."""
    steps: list[tuple[str, Step]] = [
        ("configuration", check_configuration),
        ("secret key", check_secret_key),
        ("database", check_database),
        ("mail backend", check_mail_backend),
        ("journal", check_journal),
        ("admin page", check_admin_page),
        ("webhooks", check_webhooks),
        ("writer", check_writer),
        ("dkim", check_dkim),
        ("dns", check_dns),
        ("bounces", check_bounces),
    ]
    checks: list[Check] = []
    for name, step in steps:
        try:
            checks.extend(step(settings, timeout))
        except Exception as exc:  # a check must never take the others down with it
            summary = f"the check itself broke: {type(exc).__name__}: {exc}"
            checks.append(Check(name, False, summary, "Fix the setting the message names."))
    redactor = redactor_for(settings)
    return [_scrub(check, redactor) for check in checks]


def render(checks: Sequence[Check]) -> str:
    """One line per check, a ``fix:`` line under each that is not ok, then the counts."""
    lines = []
    for check in checks:
        lines.append(f"{LABELS[check.ok]:<4}  {check.name}: {check.summary}")
        if check.ok is not True and check.fix:
            lines.append(f"      fix: {check.fix}")
    counts = {ok: sum(1 for c in checks if c.ok is ok) for ok in (True, None, False)}
    warnings = "warning" if counts[None] == 1 else "warnings"
    lines.append(f"{counts[True]} ok, {counts[None]} {warnings}, {counts[False]} failed")
    return "\n".join(lines)


def exit_code(checks: Iterable[Check]) -> int:
    """1 if any check failed, else 0: warnings alone don't fail the command."""
    return 1 if any(check.ok is False for check in checks) else 0


# --- secrets -------------------------------------------------------------------------------


def _scrub(check: Check, redactor: Redactor) -> Check:
    fix = redactor.scrub(check.fix) if check.fix else check.fix
    return dataclasses.replace(check, summary=redactor.scrub(check.summary), fix=fix)
