"""Whether the DKIM keys load and sign, and what to publish for each. Whether the DNS
publishes them is :mod:`newsletter.doctor.dns_checks`."""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.doctor.check import Check
from newsletter.edition import dkim


def check_dkim(settings: Settings, _timeout: float) -> list[Check]:
    if not settings.dkim_keys.strip():
        return [
            Check(
                "dkim",
                None,
                "no DKIM keys: messages sent over smtp:// or to the outbox are not signed",
                "newsletter dkim keygen --selector S, publish the record it prints, then set "
                "NEWSLETTER_DKIM_KEYS (an email API signs with its own key instead).",
            )
        ]
    domain = settings.dkim_domain or settings.sender().domain
    try:
        signer = dkim.signer_from(settings.dkim_keys, domain=domain)
    except dkim.DkimError as exc:
        return [Check("dkim", False, str(exc), "Fix NEWSLETTER_DKIM_KEYS (selector:/path.pem).")]
    assert signer is not None
    checks = []
    for key in signer.keys:
        record = dkim.txt_record(key)
        checks.append(
            Check(
                "dkim",
                True,
                f"{key.algorithm} key {key.selector!r} for {domain}; publish at "
                f"{key.selector}._domainkey.{domain}: {record[:40]}...",
            )
        )
    sender = settings.sender().domain
    if domain != sender and not sender.endswith("." + domain):
        checks.append(
            Check(
                "dkim",
                None,
                f"d={domain} does not align with the From domain {sender} (DMARC needs it to)",
                "Set NEWSLETTER_DKIM_DOMAIN to the From domain or its parent.",
            )
        )
    return checks
