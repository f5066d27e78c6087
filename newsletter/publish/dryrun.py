"""What a send would do, found out without doing any of it (``edition send --dry-run``).

Every message is rendered and personalized exactly as the send would (the same template, the
same signed unsubscribe link), every address is checked the way an import checks it, and the
sizes are measured; nothing is written: no delivery, no state change, no event, no mail. A
dry run of a draft looks at everyone who is active now (who the start would fix as the
audience); of a started edition, at the deliveries still open.

It streams the audience in pages, holding one message at a time, so it runs over a list of
any size in the memory of one page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from newsletter.audience.addresses import AddressError, normalize_email
from newsletter.config import Settings
from newsletter.edition.lifecycle import EditionStateError
from newsletter.edition.personalization import Recipient
from newsletter.edition.rendering import GMAIL_CLIP_BYTES
from newsletter.publish.drafting import prepare, signer_for
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import EditionStatus

#: Problems listed by name; past these, only counted.
SHOWN_PROBLEMS = 20
PAGE = 1000


@dataclass(slots=True)
class DryRunReport:
    """What a send of the edition would mail now."""

    edition_id: int
    status: str
    subject: str
    would_send: int = 0
    total_bytes: int = 0
    largest_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def lines(self, backend: str) -> list[str]:
        """The report, for a person: what would go, where, and what would not."""
        average = self.total_bytes // self.would_send if self.would_send else 0
        largest = self.largest_bytes / 1024
        lines = [
            f"dry run of edition {self.edition_id} ({self.status}, {self.subject!r}): would send "
            f"{self.would_send:,} messages via {backend}; nothing was sent or recorded",
            f"  messages: {average / 1024:.1f} KB on average, largest {largest:.1f} KB"
            + (
                f" (over Gmail's {GMAIL_CLIP_BYTES // 1024} KB clipping limit)"
                if self.largest_bytes > GMAIL_CLIP_BYTES
                else ""
            ),
        ]
        if self.problem_count:
            lines.append(f"  {self.problem_count:,} would fail before sending:")
            lines += [f"    {p}" for p in self.problems]
            if self.problem_count > len(self.problems):
                lines.append(f"    ... and {self.problem_count - len(self.problems):,} more")
        return lines


def dry_run(session: Session, *, edition_id: int, settings: Settings, now: float) -> DryRunReport:
    """Render, personalize and check every message a send of ``edition_id`` would send now.

    ``now`` (epoch seconds) is the Date the messages would carry. Raises
    :class:`~newsletter.edition.lifecycle.EditionStateError` for an edition no send would touch.
    """
    settings.require_sending_ready()
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status in (EditionStatus.sent, EditionStatus.cancelled):
        raise EditionStateError(f"edition {edition_id} is {edition.status}: a send mails nobody")
    _, template, _ = prepare(session, edition=edition, settings=settings)
    signer = signer_for(settings)
    report = DryRunReport(edition_id, edition.status, edition.subject)
    started = edition.status != EditionStatus.draft
    after = 0
    while True:
        page = ledger.would_send(
            session,
            edition_id=edition_id,
            newsletter_id=edition.newsletter_id,
            started=started,
            after_id=after,
            limit=PAGE,
        )
        if not page:
            break
        after = page[-1][0]
        for subscriber_id, email, name in page:
            try:
                normalize_email(email)
                message = template.build(Recipient(subscriber_id, email, name), signer, now=now)
            except (AddressError, ValueError) as exc:
                report.problem_count += 1
                if len(report.problems) < SHOWN_PROBLEMS:
                    report.problems.append(f"subscriber {subscriber_id} <{email[:80]}>: {exc}")
                continue
            size = message.size
            report.would_send += 1
            report.total_bytes += size
            report.largest_bytes = max(report.largest_bytes, size)
    session.rollback()  # nothing was written; end the read transaction
    return report


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What ``edition send`` is about to do, for the question it asks first."""

    status: str
    subject: str
    audience: int


def send_plan(session: Session, *, edition_id: int) -> SendPlan:
    """The edition's state and how many people a send of it would mail now (reads only)."""
    edition = store.get_edition(session, edition_id=edition_id)
    audience = ledger.would_send_count(
        session,
        edition_id=edition_id,
        newsletter_id=edition.newsletter_id,
        started=edition.status != EditionStatus.draft,
    )
    return SendPlan(edition.status, edition.subject, audience)
