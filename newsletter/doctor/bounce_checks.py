"""Whether bounces and complaints sent as mail can come back: a VERP return path for
``smtp://`` sends, and a bounce mailbox that logs in. The DNS side (MX of the bounce domain,
SPF of the envelope domain) is :mod:`newsletter.doctor.dns_checks`."""

from __future__ import annotations

from urllib.parse import urlsplit

from newsletter.config import Settings
from newsletter.doctor.check import Check
from newsletter.doctor.dns_checks import SMTP_SCHEMES
from newsletter.feedback import mailbox


def check_bounces(settings: Settings, timeout: float) -> list[Check]:
    sends_itself = any(
        urlsplit(url).scheme.lower() in SMTP_SCHEMES for url in settings.mail_backend.split()
    )
    checks: list[Check] = []
    if not settings.bounce_address:
        if sends_itself:
            checks.append(
                Check(
                    "bounces",
                    None,
                    "smtp:// sends use the From address as return path: bounces land in that "
                    "mailbox unread and nobody is suppressed",
                    "Set NEWSLETTER_BOUNCE_ADDRESS (e.g. bounces@your-domain) and run "
                    "`newsletter bounces serve` behind your MTA, or `newsletter bounces poll`.",
                )
            )
        return checks
    checks.append(
        Check(
            "bounces",
            True,
            f"return paths: {settings.bounce_address.split('@')[0]}+<signed token>@"
            f"{settings.bounce_address.split('@')[-1]}",
        )
    )
    if not settings.bounce_mailbox:
        checks.append(
            Check(
                "bounces",
                None,
                "no NEWSLETTER_BOUNCE_MAILBOX: bounces are read only if an MTA hands them to "
                "`newsletter bounces serve`",
            )
        )
        return checks
    try:
        box = mailbox.MailboxURL.parse(settings.bounce_mailbox)
        mailbox.poll(box, lambda raw: False, timeout=timeout, limit=0)
    except mailbox.MailboxError as exc:
        return [*checks, Check("bounces", False, str(exc), "Fix NEWSLETTER_BOUNCE_MAILBOX.")]
    checks.append(Check("bounces", True, f"{box.describe()} logs in"))
    return checks
