"""What a health check reports, and the constants the checks share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from newsletter.config import Settings

#: Domains reserved for examples (RFC 2606, RFC 6761): a placeholder left in the settings.
RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost"})
RESERVED_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
LABELS = {True: "ok", None: "warn", False: "FAIL"}
MAIL_FIX = (
    "Check the host and port in NEWSLETTER_MAIL_BACKEND and that the server accepts "
    "connections from this machine."
)


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` is True (fine), None (a warning, or skipped) or False (broken)."""

    name: str
    ok: bool | None
    summary: str
    fix: str | None = None


Step = Callable[[Settings, float], list[Check]]
