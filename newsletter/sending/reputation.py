"""The circuit breaker on sender reputation: an edition that draws too many complaints or hard
bounces pauses itself before the domain's reputation burns.

Gmail and Yahoo ask bulk senders to keep spam complaints under 0.3% (their 2024 rules), and a
hard-bounce rate of a few percent says the list is stale. Both rates are read per edition, as
reports arrive (webhooks, bounce reports, 5xx answers at send time), from the same rows the
stats report counts:

- complaint rate = people who complained / messages accepted (sent or queued);
- bounce rate = people who hard-bounced / messages attempted (accepted or failed: a 550 at
  send time is a hard bounce of a message that never counted as accepted).

Nothing trips before ``min_sample`` messages were attempted: two complaints out of the first
fifty say little. A trip is a compare-and-set pause (only a ``sending`` edition moves), so of
many reports crossing the line at once one pauses and alerts; the reason names both rates and
the limits, and resuming is an operator's decision (``newsletter edition resume``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from newsletter.storage import counters, store
from newsletter.storage.models import DeliveryStatus, Edition, MailEventKind

BREAKER = "reputation breaker"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Rates (fractions, 0.003 = 0.3%) above which a sending edition pauses; 0 turns one off."""

    complaint_rate: float = 0.003
    bounce_rate: float = 0.05
    min_sample: int = 500


@dataclass(frozen=True, slots=True)
class Reading:
    """An edition's reputation numbers at one moment."""

    edition_id: int
    attempted: int  # accepted + failed
    accepted: int  # sent + queued
    hard_bounces: int  # people
    complaints: int  # people

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return (self.attempted, self.accepted, self.hard_bounces, self.complaints)

    def since(self, baseline: tuple[int, int, int, int]) -> Reading:
        """What came after ``baseline`` (the counts at a resume)."""
        a, b, c, d = (max(0, n - m) for n, m in zip(self.counts, baseline, strict=True))
        return Reading(self.edition_id, a, b, c, d)

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.accepted if self.accepted else 0.0

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.attempted if self.attempted else 0.0

    def over(self, limits: Thresholds) -> str | None:
        """Why this reading trips the breaker, or None."""
        if self.attempted < limits.min_sample:
            return None
        reasons = []
        if limits.complaint_rate and self.complaint_rate > limits.complaint_rate:
            reasons.append(
                f"complaints {self.complaints}/{self.accepted} = {self.complaint_rate:.2%} "
                f"(limit {limits.complaint_rate:.2%})"
            )
        if limits.bounce_rate and self.bounce_rate > limits.bounce_rate:
            reasons.append(
                f"hard bounces {self.hard_bounces}/{self.attempted} = {self.bounce_rate:.2%} "
                f"(limit {limits.bounce_rate:.2%})"
            )
        return "; ".join(reasons) or None


def read(session: Session, *, edition_id: int, since_resume: bool = True) -> Reading:
    """The edition's delivery counters (:func:`newsletter.storage.counters.tallies`, a few rows
    however large the send) and its report counters (:mod:`newsletter.storage.counters`, people
    once).

    With ``since_resume`` (what the breaker judges), only what came after an operator resumed
    a send the breaker had paused: they looked at the rates then, and the same reports must
    not pause it again at the next one."""
    by_state = counters.tallies(session, [edition_id]).get(edition_id, {})
    accepted = by_state.get(DeliveryStatus.sent.value, 0) + by_state.get(
        DeliveryStatus.queued.value, 0
    )
    failures = by_state.get(DeliveryStatus.failed.value, 0)

    reported = counters.reports(session, [edition_id]).get(edition_id, {})
    hard = reported.get(MailEventKind.bounced_hard.value, 0)
    complaints = reported.get(MailEventKind.complained.value, 0)
    reading = Reading(
        edition_id=edition_id,
        attempted=int(accepted) + int(failures),
        accepted=int(accepted),
        hard_bounces=int(hard),
        complaints=int(complaints),
    )
    if since_resume:
        baseline = session.execute(
            sa_select(col(Edition.breaker_baseline)).where(col(Edition.id) == edition_id)
        ).scalar()
        if baseline:
            a, b, c, d = (int(n) for n in baseline.split(","))
            return reading.since((a, b, c, d))
    return reading


@dataclass(frozen=True, slots=True)
class Trip:
    """The breaker paused ``edition_id`` for ``reason``: the caller alerts, after committing."""

    edition_id: int
    reason: str


def guard(
    session: Session, *, edition_ids: Iterable[int], limits: Thresholds, now: datetime
) -> list[Trip]:
    """Pause each sending edition of ``edition_ids`` whose rates are over ``limits``.

    Returns the editions this call paused (an edition already paused, sent or cancelled is
    left alone and not returned, so an alert goes out once). The caller commits."""
    trips = []
    for edition_id in sorted(set(edition_ids)):
        reason = read(session, edition_id=edition_id).over(limits)
        if reason is None:
            continue
        text = f"paused by the {BREAKER}: {reason}"
        if store.transition(
            session,
            edition_id=edition_id,
            action="pause",
            reason=text,
            actor=BREAKER,
            now=now,
            detail=reason,
        ):
            trips.append(Trip(edition_id, text))
    return trips
