"""Schedule files: ``schedules/<slug>.toml``, one per newsletter, reviewed like code.

``check`` validates every file and reports every problem as ``file: field: message``;
``sync`` loads them into the database in one transaction (all or nothing), creating or updating
the newsletter (name, from address, zone, item cap) and its
:class:`~newsletter.storage.models.Schedule`. The operator's pause switch lives only in the
database and survives a sync; a schedule whose file was removed is deleted (its newsletter and
editions stay).

Example::

    slug = "weekly-ai-tool-verdicts"
    name = "Weekly AI Tool Verdicts"
    from = "Weekly AI Tool Verdicts <verdicts@example.com>"
    send = "Monday 09:00"
    timezone = "Europe/Berlin"
    draft_before = "3h"
    approval_required = false
    editors = ["editor@example.com"]
    item_cap = 8
    local_time = false
    writer = "rules"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from newsletter.audience.addresses import AddressError, normalize_email
from newsletter.config import WRITER_NAMES
from newsletter.edition.content import SLUG_PATTERN
from newsletter.edition.periods import rule_of
from newsletter.edition.timing import RuleError, WeeklyRule, check_zone, parse_duration, parse_rule
from newsletter.errors import NewsletterError
from newsletter.storage.models import Edition, EditionStatus, Newsletter, Schedule, ScheduleSkip

FIELDS = {
    "slug": "the newsletter's slug (lower-case letters, digits, hyphens)",
    "name": "the newsletter's name",
    "from": 'sender, "Name <address>"',
    "send": 'weekday and local time, "Monday 09:00"',
    "timezone": "IANA time zone of the send time",
    "draft_before": 'how long before the send the draft is assembled, "3h" (default)',
    "approval_required": "an editor must approve before it goes out (default false)",
    "editors": "addresses told when an edition waits for approval",
    "item_cap": "most comparisons in one edition (default 8)",
    "site_url": "the review site for the footer and the more link (optional)",
    "local_time": "deliver at the send time in each subscriber's own zone (default false)",
    "writer": "who writes verdict and intro suggestions: rules, claude or huggingface "
    "(default: NEWSLETTER_WRITER)",
}

REQUIRED = ("slug", "name", "send", "timezone")


class ScheduleFileError(NewsletterError, ValueError):
    """One or more schedule files are invalid; ``problems`` lists each as file: field: why."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)

    def headline(self) -> str:
        return f"{len(self.problems)} problem(s) in the schedule files"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    path: Path
    slug: str
    name: str
    rule: WeeklyRule
    from_address: str | None = None
    draft_before: timedelta = timedelta(hours=3)
    approval_required: bool = False
    editors: tuple[str, ...] = ()
    item_cap: int = 8
    site_url: str | None = None
    local_time: bool = False
    writer: str | None = None


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load(directory: Path) -> list[ScheduleSpec]:
    """Every ``*.toml`` in ``directory``, validated; :class:`ScheduleFileError` with every
    problem of every file otherwise."""
    if not directory.is_dir():
        raise ScheduleFileError([f"{directory}: no such folder"])
    specs: list[ScheduleSpec] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        spec, found = parse_file(path)
        problems += found
        if spec is not None:
            specs.append(spec)
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.slug in seen:
            problems.append(
                f"{spec.path.name}: slug: {spec.slug!r} is also in {seen[spec.slug].name}"
            )
        seen[spec.slug] = spec.path
    if problems:
        raise ScheduleFileError(problems)
    return specs


def parse_file(path: Path) -> tuple[ScheduleSpec | None, list[str]]:
    """The spec of one file, or None and its problems (all of them, not just the first)."""
    label = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{label}: can't read: {exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{label}: not valid TOML: {exc}"]
    except RecursionError:
        return None, [f"{label}: not valid TOML: nested too deeply"]
    problems = [
        f"{label}: {key}: unknown field; known: {', '.join(FIELDS)}"
        for key in data
        if key not in FIELDS
    ]
    problems += [f"{label}: {key}: missing" for key in REQUIRED if key not in data]

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{label}: {key}: expected a non-empty string")
            return None
        # What `sync` could store: `check` refuses everything `sync` would.
        if len(value.strip()) > MAX_LENGTHS.get(key, 500):
            problems.append(f"{label}: {key}: at most {MAX_LENGTHS.get(key, 500)} characters")
            return None
        if any(ord(c) < 32 for c in value):
            problems.append(f"{label}: {key}: contains control characters or line breaks")
            return None
        return value.strip()

    def flag(key: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            problems.append(f"{label}: {key}: expected true or false")
            return False
        return value

    slug = text("slug")
    if slug is not None and not re.fullmatch(SLUG_PATTERN, slug):
        problems.append(f"{label}: slug: {slug!r} is not lower-case letters, digits and hyphens")
    if slug is not None and path.stem != slug:
        problems.append(f"{label}: slug: {slug!r} differs from the file name ({path.stem}.toml)")
    name = text("name")
    zone = text("timezone")
    rule = None
    if zone is not None:
        try:
            check_zone(zone)
        except RuleError as exc:
            problems.append(f"{label}: timezone: {exc}")
            zone = None
    send = text("send")
    if send is not None and zone is not None:
        try:
            rule = parse_rule(send, zone)
        except RuleError as exc:
            problems.append(f"{label}: send: {exc}")
    sender = text("from")
    if sender is not None:
        display, address = parseaddr(sender)
        try:
            # Stored with the ASCII form of the address (IDN domain as xn--): it becomes the
            # envelope sender, which SMTP needs in ASCII.
            sender = formataddr((display, normalize_email(address)[0]))
        except AddressError as exc:
            problems.append(f'{label}: from: expected "Name <address>": {exc}')
    lead = timedelta(hours=3)
    raw_lead = text("draft_before")
    if raw_lead is not None:
        try:
            lead = parse_duration(raw_lead)
        except RuleError as exc:
            problems.append(f"{label}: draft_before: {exc}")
        if lead > timedelta(days=6):
            problems.append(f"{label}: draft_before: at most 6 days (the next send comes after 7)")
    editors = _editors(data.get("editors", []), label, problems)
    if len(",".join(editors)) > 2000:
        problems.append(f"{label}: editors: at most 2000 characters in all")
    cap = data.get("item_cap", 8)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= 50:
        problems.append(f"{label}: item_cap: expected a whole number from 1 to 50")
        cap = 8
    site_url = text("site_url")
    if site_url is not None and not site_url.startswith(("https://", "http://")):
        problems.append(f"{label}: site_url: expected an http(s) URL")
    approval = flag("approval_required")
    if approval and not editors:
        problems.append(f"{label}: editors: approval_required needs at least one editor to tell")
    local_time = flag("local_time")
    writer = text("writer")
    if writer is not None and writer not in WRITER_NAMES:
        problems.append(f"{label}: writer: {writer!r} is not one of {', '.join(WRITER_NAMES)}")
    if problems or slug is None or name is None or rule is None:
        return None, problems
    return (
        ScheduleSpec(
            path=path,
            slug=slug,
            name=name,
            rule=rule,
            from_address=sender,
            draft_before=lead,
            approval_required=approval,
            editors=editors,
            item_cap=cap,
            site_url=site_url,
            local_time=local_time,
            writer=writer,
        ),
        [],
    )


#: The database columns' sizes for the fields a schedule file sets (Newsletter, Schedule).
MAX_LENGTHS = {"slug": 120, "name": 200, "site_url": 500, "from": 320, "timezone": 64}


def _editors(value: Any, label: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{label}: editors: expected a list of addresses")
        return ()
    out = []
    for raw in value:
        try:
            out.append(normalize_email(raw)[0])
        except AddressError as exc:
            problems.append(f"{label}: editors: {raw!r}: {exc}")
    return tuple(out)


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
