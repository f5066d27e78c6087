"""Checks of the settings themselves: configuration, secret key, journal, a leftover admin
password, webhooks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.backends.http import LOOPBACK
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import (
    INSECURE_SECRET_KEYS,
    MIN_SECRET_KEY_BITS,
    MIN_SECRET_KEY_LENGTH,
    ConfigError,
    Settings,
    key_strength_bits,
)
from newsletter.doctor.check import RESERVED_DOMAINS, RESERVED_TLDS, Check
from newsletter.webhooks import registry

# --- settings ------------------------------------------------------------------------------


def check_configuration(settings: Settings, _timeout: float) -> list[Check]:
    problems, fixes = [], []
    sender = settings.sender()
    if _placeholder_host(sender.domain):
        problems.append(f"from address {sender.addr_spec} is at an example domain")
        fixes.append('Set NEWSLETTER_FROM to "Name <address>" at a domain with SPF and DKIM.')
    if settings.postal_address == Settings.model_fields["postal_address"].default:
        problems.append("the postal address is the shipped example (CAN-SPAM wants yours)")
        fixes.append("Set NEWSLETTER_POSTAL_ADDRESS to your physical postal address.")
    found = "; ".join(problems) or f"settings valid, sending as {settings.from_address}"
    config = Check("configuration", None if problems else True, found, " ".join(fixes) or None)

    base = urlsplit(settings.base_url)
    if base.scheme == "https":
        base_check = Check("base URL", True, f"{settings.base_url} (https)")
    elif base.hostname in LOOPBACK:
        base_check = Check("base URL", True, f"{settings.base_url} (http on this machine: dev)")
    else:
        base_check = Check(
            "base URL",
            None,
            f"{settings.base_url} is http on a public host: one-click unsubscribe (RFC 8058) "
            "needs https, and tokens and passwords would cross the network in clear",
            "Serve the web app over https and set NEWSLETTER_BASE_URL=https://...",
        )

    site = urlsplit(settings.site_url)
    site_fix = "Set NEWSLETTER_SITE_URL to your review site's https URL."
    if _placeholder_host(site.hostname or ""):
        site_check = Check("site URL", None, f"{settings.site_url} is an example domain", site_fix)
    elif site.scheme != "https":
        site_check = Check("site URL", None, f"{settings.site_url} is plain http", site_fix)
    else:
        site_check = Check("site URL", True, settings.site_url)
    return [config, base_check, site_check]


def _placeholder_host(host: str) -> bool:
    labels = host.lower().rstrip(".").split(".")
    return labels[-1] in RESERVED_TLDS or ".".join(labels[-2:]) in RESERVED_DOMAINS


def check_secret_key(settings: Settings, _timeout: float) -> list[Check]:
    key = settings.secret_key
    try:
        settings.require_sending_ready()
    except ConfigError as exc:
        summary = f"NEWSLETTER_SECRET_KEY is {_key_weakness(key)}: unsubscribe links can be forged"
        return [Check("secret key", False, summary, str(exc))]
    old = settings.signing_keys()[1:]
    # Each old key against the very rule the current key passed (require_sending_ready).
    weak = [
        f"#{n} ({_key_weakness(k)})"
        for n, k in enumerate(old, 1)
        if _refused(settings.model_copy(update={"secret_key": k}))
    ]
    if weak:
        summary = f"current key strong, but NEWSLETTER_OLD_SECRET_KEYS {', '.join(weak)} "
        summary += "would accept forged links"
        fix = "Remove weak keys from NEWSLETTER_OLD_SECRET_KEYS (links they signed stop working)."
        return [Check("secret key", None, summary, fix)]
    accepted = f"; {len(old)} old key(s) still accepted" if old else ""
    return [Check("secret key", True, f"set, at least {MIN_SECRET_KEY_LENGTH} chars{accepted}")]


def _refused(settings: Settings) -> bool:
    try:
        settings.require_sending_ready()
    except ConfigError:
        return True
    return False


def _key_weakness(key: str) -> str:
    if not key:
        return "empty"
    if key.lower() in INSECURE_SECRET_KEYS:
        return "a placeholder"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"shorter than {MIN_SECRET_KEY_LENGTH} characters"
    return (
        f"too predictable (about {key_strength_bits(key):.0f} bits; "
        f"at least {MIN_SECRET_KEY_BITS} wanted)"
    )


# --- files and web -------------------------------------------------------------------------


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` can't take files, or None; a missing folder needs a writable ancestor."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"can't write in {existing}: {exc.strerror or exc}"
    return None


def check_journal(settings: Settings, _timeout: float) -> list[Check]:
    fix = 'Set NEWSLETTER_JOURNAL_DIR to "auto" or a writable folder on local disk.'
    folder = settings.journal_path()
    if folder is None:
        summary = "off: a sender that crashes may mail its chunk in flight again"
        return [Check("journal", None, summary, fix)]
    if problem := unwritable(folder):
        return [Check("journal", False, f"{folder}: {problem}", fix)]
    state = "is writable" if folder.exists() else "will be created (its parent is writable)"
    return [Check("journal", True, f"{folder} {state}")]


def check_admin_page(settings: Settings, _timeout: float) -> list[Check]:
    """A leftover NEWSLETTER_ADMIN_PASSWORD: the HTTP-Basic page it opened is gone (nothing
    said when it is unset)."""
    if not settings.admin_password:
        return []
    return [
        Check(
            "admin page",
            None,
            "NEWSLETTER_ADMIN_PASSWORD is set but no longer used: /admin is now the console",
            "Create an admin with `newsletter user add EMAIL --role admin`, then remove "
            "NEWSLETTER_ADMIN_PASSWORD.",
        )
    ]


def check_webhooks(settings: Settings, _timeout: float) -> list[Check]:
    """Bounce and complaint webhooks for each scheme in NEWSLETTER_MAIL_BACKEND that has one
    registered (built-in or plugin), with the secret its declaration names."""
    schemes = dict.fromkeys(urlsplit(u).scheme.lower() for u in settings.mail_backend.split())
    checks = []
    for scheme in schemes:
        hook = registry.provider(scheme) if scheme else None
        if hook is not None:
            variable = hook.secret_variable
            url = f"{settings.base_url}/webhooks/{scheme}"
            if registry.secret_for(hook, settings, os.environ):
                checks.append(Check("webhooks", True, f"{scheme} events accepted at {url}"))
                continue
            summary = f"{variable} is empty: {scheme} bounces and complaints won't be processed"
            fix = f"Set {variable} and point {scheme}'s webhook at {url}."
            checks.append(Check("webhooks", None, summary, fix))
        elif scheme in SMTPBackend.schemes:
            summary = (
                f"{scheme}: bounces come back as mail to the sender; the engine doesn't read them"
            )
            fix = "Watch that mailbox and `newsletter subscribers remove` bounced addresses."
            checks.append(Check("webhooks", None, summary, fix))
    return checks or [Check("webhooks", True, "none apply to this mail backend")]
