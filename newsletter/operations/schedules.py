"""Schedules in the database: ``sync`` makes them match the files, and an operator's skips.

``sync`` loads the validated files (:mod:`newsletter.operations.schedule_files`) in one
transaction (all or nothing), creating or updating the newsletter (name, from address, zone,
item cap) and its :class:`~newsletter.storage.models.Schedule`. The operator's pause switch
lives only in the database and survives a sync; a schedule whose file was removed is deleted
(its newsletter and editions stay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from newsletter.edition.periods import rule_of
from newsletter.edition.timing import WeeklyRule
from newsletter.operations.schedule_files import ScheduleSpec
from newsletter.storage.models import Edition, EditionStatus, Newsletter, Schedule, ScheduleSkip


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sync(
    session: Session, specs: Sequence[ScheduleSpec], *, default_site_url: str, now: datetime
) -> SyncReport:
    """Make the database match ``specs`` as of ``now``; the caller commits (all or nothing).

    ``now`` stamps a created or changed schedule: a send time before it is not "missed"."""
    report = SyncReport()
    newsletters = {n.slug: n for n in session.exec(select(Newsletter))}
    schedules = {s.newsletter_id: s for s in session.exec(select(Schedule))}
    kept: set[int] = set()
    for spec in specs:
        newsletter = newsletters.get(spec.slug)
        if newsletter is None:
            newsletter = Newsletter(
                slug=spec.slug,
                name=spec.name,
                timezone=spec.rule.timezone,
                item_cap=spec.item_cap,
                site_url=spec.site_url or default_site_url,
            )
            session.add(newsletter)
            session.flush()
        newsletter.name = spec.name
        newsletter.timezone = spec.rule.timezone
        newsletter.item_cap = spec.item_cap
        newsletter.from_address = spec.from_address
        newsletter.writer = spec.writer
        if spec.site_url:
            newsletter.site_url = spec.site_url
        assert newsletter.id is not None
        kept.add(newsletter.id)
        schedule = schedules.get(newsletter.id)
        values: dict[str, Any] = {
            "weekday": spec.rule.weekday,
            "send_time": spec.rule.at.strftime("%H:%M"),
            "timezone": spec.rule.timezone,
            "draft_lead_minutes": int(spec.draft_before.total_seconds() // 60),
            "approval_required": spec.approval_required,
            "local_time": spec.local_time,
            "editors": ",".join(spec.editors),
            "source": str(spec.path),
        }
        if schedule is None:
            session.add(Schedule(newsletter_id=newsletter.id, updated_at=now, **values))
            report.created.append(spec.slug)
            continue
        if any(getattr(schedule, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(schedule, k, v)
            schedule.updated_at = now
            report.updated.append(spec.slug)
            warning = _week_already_sent(session, newsletter, spec.rule, now)
            if warning:
                report.warnings.append(warning)
    slugs = {n.id: n.slug for n in newsletters.values()}
    for newsletter_id, schedule in schedules.items():
        if newsletter_id not in kept:
            session.delete(schedule)
            report.removed.append(slugs.get(newsletter_id, str(newsletter_id)))
    session.flush()
    return report


def _week_already_sent(
    session: Session, newsletter: Newsletter, rule: WeeklyRule, now: datetime
) -> str | None:
    """A changed rule whose next send falls in a week that already has an edition: that send
    will find its period key taken and send nothing (one edition per newsletter and week)."""
    upcoming = rule.next_at_or_after(now)
    key = rule.key(upcoming)
    taken = session.exec(
        select(Edition.id).where(
            Edition.newsletter_id == newsletter.id,
            Edition.period_key == key,
            col(Edition.status) != EditionStatus.draft,
        )
    ).first()
    if taken is None:
        return None
    return (
        f"{newsletter.slug}: the next send ({upcoming:%a %d %b %H:%M} UTC) is in {key}, which "
        f"already has edition {taken}: nothing goes out that week; the schedule resumes the "
        "week after"
    )


def is_skipped(session: Session, *, newsletter_id: int, period_key: str) -> bool:
    """Whether an operator skipped this period of the newsletter (``schedule skip``)."""
    found = session.exec(
        select(ScheduleSkip.id).where(
            ScheduleSkip.newsletter_id == newsletter_id, ScheduleSkip.period_key == period_key
        )
    ).first()
    return found is not None


def active_schedules(session: Session) -> list[tuple[Schedule, Newsletter]]:
    rows = session.exec(
        select(Schedule, Newsletter)
        .join(Newsletter, col(Newsletter.id) == Schedule.newsletter_id)
        .order_by(col(Newsletter.slug))
    ).all()
    return [(s, n) for s, n in rows]


def skip_period(session: Session, *, schedule: Schedule, period: str) -> datetime:
    """Do not draft or send ``period`` (an ISO week, e.g. 2026-W49); its send time. Skipping
    twice changes nothing; an edition already started is not touched. The caller commits."""
    when = rule_of(schedule).occurrence_for(period)  # RuleError names a bad period
    exists = session.exec(
        select(ScheduleSkip).where(
            ScheduleSkip.newsletter_id == schedule.newsletter_id,
            ScheduleSkip.period_key == period,
        )
    ).first()
    if exists is None:
        session.add(ScheduleSkip(newsletter_id=schedule.newsletter_id, period_key=period))
        session.flush()
    return when
