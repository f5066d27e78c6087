"""Bounce and complaint reports that arrive as mail, turned into the events webhooks give.

Both intake paths end here: the inbound listener (``newsletter bounces serve``: an MTA
forwards the mail for the bounce address over SMTP or LMTP) and the mailbox poller
(``newsletter bounces poll``: IMAP or POP3, as listmonk does). A message is parsed by
:mod:`newsletter.feedback.bounce_reports`; each report is tied to its delivery by the signed VERP
return path it was addressed to (the envelope recipient, or the headers the report carries), and
handed to :func:`newsletter.publish.breaker.take`, the code the webhooks use: a hard bounce or
complaint suppresses at once, soft ones count, the breaker reads the rates.

A report without a genuine return path is stored (nothing is lost, ``stats`` counts it) but
acts on nobody: its addresses and Message-ID are in every copy of the newsletter, so anyone
could forge one. The report's own id makes a report that arrives twice (a poll after a crash,
an MTA retrying) count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.clock import Clock
from newsletter.config import Settings
from newsletter.edition.verp import ReturnPaths, return_paths
from newsletter.feedback import bounce_reports, mailbox
from newsletter.publish import breaker
from newsletter.sending import reputation
from newsletter.webhooks.base import EventKind, ProviderEvent

#: Where a redacted report's address would be (a complaint from Outlook.com, say).
REDACTED = "redacted"


@dataclass(slots=True)
class Intake:
    """What a batch of messages did; ``outcome`` counts as webhooks do, plus ``ignored``
    (not a bounce or complaint: an auto-reply, a delay notice)."""

    messages: int = 0
    outcome: Counter[str] = field(default_factory=Counter)
    trips: list[reputation.Trip] = field(default_factory=list)

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcome.items()))
        return f"{self.messages} messages" + (f": {parts}" if parts else "")


def paths_for(settings: Settings) -> ReturnPaths | None:
    """The return paths the engine signs with, or None when VERP is off."""
    return return_paths(settings.bounce_address, settings.signing_keys())


def events_from(
    raw: bytes, *, envelope: Sequence[str] = (), paths: ReturnPaths | None, now: datetime
) -> list[ProviderEvent]:
    """The events one message carries ([] for anything that is not a report).

    ``envelope`` holds the recipients the message was delivered to (RCPT TO), where the
    return path is most reliable; the headers of the report and of the returned original
    are searched after it."""
    try:
        reports = bounce_reports.parse(raw)
    except bounce_reports.NotAReport:
        return []
    events = []
    for report in reports:
        ref = paths.first([*envelope, *report.addresses]) if paths is not None else None
        complaint = report.kind == EventKind.complained
        detail = " ".join(p for p in (report.status, report.diagnostic) if p)
        events.append(
            ProviderEvent(
                provider="arf" if complaint else "dsn",
                event_id=report.report_id,
                kind=report.kind,
                email=report.recipient or REDACTED,
                provider_message_id=None,
                occurred_at=report.occurred_at or now,
                detail=f"{detail} (from {report.reporter})" if report.reporter else detail,
                delivery=ref,
                match_email=False,
            )
        )
    return events


def take(
    session: Session,
    settings: Settings,
    raw: bytes,
    *,
    envelope: Sequence[str] = (),
    now: datetime,
    intake: Intake | None = None,
) -> Intake:
    """Parse one message and act on its reports; commits. Raises only what the database
    raises (the caller keeps the message then: an MTA gets 451, a mailbox keeps it)."""
    intake = intake or Intake()
    intake.messages += 1
    events = events_from(raw, envelope=envelope, paths=paths_for(settings), now=now)
    if not events:
        intake.outcome["ignored"] += 1
        return intake
    outcome, trips = breaker.take(session, settings, events, now=now)
    intake.outcome.update(outcome)
    intake.trips += trips
    return intake


def poll_mailbox(
    settings: Settings, engine: Engine, *, clock: Clock, limit: int | None = None
) -> tuple[mailbox.PollResult, Intake]:
    """Read ``NEWSLETTER_BOUNCE_MAILBOX`` once (see :func:`newsletter.feedback.mailbox.poll`): each
    message's reports are committed before it is deleted. Raises
    :class:`~newsletter.feedback.mailbox.MailboxError` when the mailbox can't be read."""
    intake = Intake()

    def handle(raw: bytes) -> bool:
        with Session(engine) as session:
            take(session, settings, raw, now=clock(), intake=intake)
        return True

    result = mailbox.poll(mailbox.MailboxURL.parse(settings.bounce_mailbox), handle, limit=limit)
    return result, intake
