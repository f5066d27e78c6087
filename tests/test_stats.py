"""Reports: exact per-edition numbers and weekly growth from real sends, the formats, the chart
and the ``stats`` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, text, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import publish
from newsletter.audience import importing
from newsletter.backends.memory import MemoryBackend
from newsletter.cli import app
from newsletter.cli.common import CLI_CLOCK
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.operations.chart import EMPTY_MESSAGE, draw_chart
from newsletter.operations.stats import EditionStats, WeekGrowth, edition_stats, list_growth
from newsletter.operations.statsformat import report_json, to_csv, to_json, to_table
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import (
    Delivery,
    Edition,
    EditionCounts,
    MailEvent,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
)
from tests.conftest import IMPORTED_AT

from .conftest import EXAMPLES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


def mail_event(
    edition_id: int | None, who: Subscriber, kind: str, event_id: str, provider: str = "postmark"
) -> MailEvent:
    return MailEvent(
        provider=provider,
        provider_event_id=event_id,
        kind=kind,
        email_key=who.email_key,
        subscriber_id=who.id,
        edition_id=edition_id,
        occurred_at=AT,
    )


def left(
    edition_id: int | None, who: Subscriber, source: str, newsletter_id: int | None
) -> SubscriptionEvent:
    return SubscriptionEvent(
        subscriber_id=who.id or 0,
        newsletter_id=newsletter_id,
        edition_id=edition_id,
        kind="unsubscribed",
        source=source,
        created_at=AT,
    )


@dataclass
class Sent:
    first: int
    second: int
    other_newsletter: int
    people: list[Subscriber]


@pytest.fixture
def sent(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Callable[..., Any]
) -> Sent:
    """Two sent editions of the default newsletter and a cancelled one of another.

    First edition: 6 deliveries; p4 left after the audience was fixed (skipped), p5's address
    is rejected (failed), p0-p3 are accepted. Second edition (the week before): the 5 still
    subscribed, all accepted.
    """
    people = add_subscribers(6, prefix="p")
    nid = publish.default_newsletter(seeded, settings).id
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    # Leaves after the audience was fixed (no event: the growth tests build their own).
    seeded.execute(
        update(Subscription)
        .where(col(Subscription.subscriber_id) == people[4].id)
        .values(status="unsubscribed")
    )
    seeded.commit()
    first = publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=MemoryBackend(reject=frozenset({people[5].email})),
    )
    assert first.totals["skipped"] == 1 and first.totals["failed"] == 1
    second = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 18, tzinfo=UTC)
    ).edition.id
    assert second is not None
    publish.send_edition(seeded, edition_id=second, settings=settings, backend=MemoryBackend())
    p0, p1, p2, p3 = people[:4]
    seeded.add_all(
        [
            mail_event(draft, p0, "delivered", "d0"),
            mail_event(draft, p0, "delivered", "d0-again"),  # reported twice
            mail_event(draft, p1, "delivered", "d1"),
            mail_event(draft, p2, "delivered", "d2"),
            mail_event(draft, p3, "bounced_soft", "b3-soft"),
            mail_event(draft, p3, "bounced_hard", "b3-hard"),
            mail_event(draft, p3, "bounced_hard", "b3-hard", provider="sendgrid"),
            mail_event(draft, p1, "bounced_soft", "b1-soft"),
            mail_event(draft, p0, "complained", "c0"),
            mail_event(draft, p0, "complained", "c0", provider="ses"),
            mail_event(None, p2, "bounced_hard", "no-edition"),  # not attributed: not counted
            left(draft, p0, "complaint", nid),
            left(draft, p1, "one-click", nid),
            left(draft, p1, "page", None),  # the same person again, from another link
            left(None, p2, "all", None),  # not from an edition's link
        ]
    )
    other = store.ensure_newsletter(
        seeded,
        slug="tool-deals",
        name="Tool Deals",
        timezone="UTC",
        site_url="https://aitoolverdicts.example",
        item_cap=8,
    )
    cancelled = Edition(
        newsletter_id=other.id or 0,
        period_key="2026-W48",
        period_start=AT,
        period_end=AT,
        status="cancelled",
        subject="<script>alert(1)</script> $5 deals",
        send_started_at=AT - timedelta(days=30),
    )
    never_started = Edition(
        newsletter_id=other.id or 0,
        period_key="2026-W49",
        period_start=AT,
        period_end=AT,
        subject="a draft",
    )
    seeded.add_all([cancelled, never_started])
    seeded.flush()
    seeded.add_all(
        [
            Delivery(edition_id=cancelled.id or 0, subscriber_id=p0.id or 0, status="queued"),
            Delivery(edition_id=cancelled.id or 0, subscriber_id=p1.id or 0, status="pending"),
            Delivery(edition_id=never_started.id or 0, subscriber_id=p0.id or 0),
            mail_event(never_started.id, p0, "delivered", "draft-event"),
        ]
    )
    seeded.commit()
    return Sent(draft, second, cancelled.id or 0, people)


def test_edition_numbers_are_exact_and_count_each_person_once(
    seeded: Session, settings: Settings, sent: Sent
) -> None:
    nid = publish.default_newsletter(seeded, settings).id
    rows = edition_stats(seeded, newsletter_id=nid)
    assert [r.edition_id for r in rows] == [sent.first, sent.second]  # oldest send first
    first, second = rows
    assert first.newsletter_slug == "weekly-ai-tool-verdicts" and first.status == "sent"
    assert first.sent_at is not None and first.sent_at.tzinfo is not None
    counts = (
        first.recipients,
        first.sent,
        first.delivered,
        first.failed,
        first.bounced,
        first.bounced_hard,
        first.complaints,
        first.unsubscribes,
    )
    # people[5] was refused at send time (550 5.1.1): a hard bounce like a reported one.
    assert counts == (5, 4, 3, 1, 3, 2, 1, 3)
    assert first.unsubscribe_rate == 0.75
    # p1 and p3 soft-bounced; the rates the breaker reads: 1 complaint of 4 accepted, 2 hard
    # bounces (p3 reported, people[5] refused) of 5 attempted (4 accepted and 1 failed).
    assert (first.bounced_soft, first.complaint_rate, first.bounce_rate) == (2, 0.25, 0.4)
    assert first.unsubscribes_by_source == {"bounce": 1, "complaint": 1, "one-click": 1, "page": 1}
    # people[5] hard-bounced on the first edition: suppressed, not on the second one.
    assert (second.recipients, second.sent, second.failed, second.delivered) == (4, 4, 0, 0)
    assert (second.unsubscribes, second.unsubscribe_rate, second.unsubscribes_by_source) == (
        0,
        0.0,
        {},
    )
    everything = edition_stats(seeded)
    assert [r.edition_id for r in everything] == [sent.other_newsletter, sent.first, sent.second]
    cancelled = everything[0]
    assert (cancelled.status, cancelled.recipients, cancelled.sent, cancelled.sent_at) == (
        "cancelled",
        2,
        1,
        None,
    )
    other_id = store.get_newsletter(seeded, slug="tool-deals").id
    assert [r.edition_id for r in edition_stats(seeded, newsletter_id=other_id)] == [
        sent.other_newsletter
    ]


def test_a_finished_editions_counts_are_kept_and_a_retry_counts_again(
    seeded: Session, settings: Settings, sent: Sent
) -> None:
    """Finishing keeps the edition's counts (EditionCounts), and the report reads them instead
    of counting its rows; re-queueing its failed deliveries forgets them, so the report counts
    the rows again and the next finish keeps new ones."""
    kept = seeded.get(EditionCounts, sent.first)
    assert kept is not None and kept.by_state == {"sent": 4, "failed": 1, "skipped": 1}
    assert ledger.counts(seeded, edition_id=sent.first)["sent"] == 4
    # The report reads the kept counts: change them and it follows (the rows say otherwise).
    kept.counts = json.dumps({"sent": 40, "failed": 1, "skipped": 1})
    seeded.commit()
    first = next(r for r in edition_stats(seeded) if r.edition_id == sent.first)
    assert (first.sent, first.failed, first.recipients) == (40, 1, 41)
    assert ledger.counts(seeded, edition_id=sent.first)["sent"] == 40
    # An operator re-queues the failed one: the kept counts go, the rows are counted again.
    assert publish.retry_failed(seeded, edition_id=sent.first) == 1
    assert (
        seeded.exec(select(EditionCounts).where(EditionCounts.edition_id == sent.first)).first()
        is None
    )
    first = next(r for r in edition_stats(seeded) if r.edition_id == sent.first)
    assert (first.sent, first.failed, first.recipients) == (4, 0, 5)
    report = publish.send_edition(
        seeded, edition_id=sent.first, settings=settings, backend=MemoryBackend()
    )
    assert report.edition.status == "sent"
    seeded.expire_all()
    kept = seeded.get(EditionCounts, sent.first)
    # p5's address was refused as unknown (a hard bounce, suppressed): skipped this time.
    assert kept is not None and kept.by_state == {"sent": 4, "skipped": 2}


def test_no_started_edition_gives_no_rows(draft: int, seeded: Session) -> None:
    assert edition_stats(seeded) == []


def _event(
    when: str, kind: str, source: str, newsletter_id: int | None, who: int = 1
) -> SubscriptionEvent:
    return SubscriptionEvent(
        subscriber_id=who,
        newsletter_id=newsletter_id,
        kind=kind,
        source=source,
        created_at=datetime.fromisoformat(when),
    )


@pytest.fixture
def growth_events(session: Session, settings: Settings, add_subscribers: Any) -> tuple[int, int]:
    """Events in ISO weeks 45-49 of 2026 for the default newsletter, one for another."""
    add_subscribers(1)
    nid = publish.default_newsletter(session, settings).id or 0
    other = Newsletter(slug="tool-deals", name="Tool Deals", site_url="https://x.example")
    session.add(other)
    session.flush()
    session.add_all(
        [
            # W45 (Mon 2 Nov): three imports, one at the last second of Sunday.
            _event("2026-11-02T00:00:00+00:00", "subscribed", "import", nid),
            _event("2026-11-05T10:00:00+00:00", "subscribed", "import", nid),
            _event("2026-11-08T23:59:59+00:00", "subscribed", "import", nid),
            # 00:30 in UTC+2 is still Sunday in UTC: W45.
            _event("2026-11-09T00:30:00+02:00", "subscribed", "operator", nid),
            # W46: two form sign-ups wait for confirmation, one confirms; one leaves.
            _event("2026-11-09T00:00:00+00:00", "unsubscribed", "one-click", nid),
            _event("2026-11-10T08:00:00+00:00", "subscribed", "form", nid),
            _event("2026-11-10T08:00:01+00:00", "subscribed", "form", nid),
            _event("2026-11-11T09:00:00+00:00", "confirmed", "form", nid),
            # W47: nothing. W48: import, resubscribe; a bounce (all newsletters), a complaint.
            _event("2026-11-23T09:00:00+00:00", "subscribed", "import", nid),
            _event("2026-11-24T09:00:00+00:00", "resubscribed", "page", nid),
            _event("2026-11-24T10:00:00+00:00", "unsubscribed", "bounce", None),
            _event("2026-11-25T10:00:00+00:00", "unsubscribed", "complaint", nid),
            _event("2026-11-25T11:00:00+00:00", "subscribed", "import", other.id),
            # W49: after the week of AT.
            _event("2026-12-01T10:00:00+00:00", "subscribed", "import", nid),
        ]
    )
    session.commit()
    return nid, other.id or 0


def test_weekly_growth(session: Session, growth_events: tuple[int, int]) -> None:
    nid, other = growth_events
    rows = list_growth(session, newsletter_id=nid, until=AT)
    assert [(r.week, r.week_start) for r in rows] == [
        ("2026-W45", date(2026, 11, 2)),
        ("2026-W46", date(2026, 11, 9)),
        ("2026-W47", date(2026, 11, 16)),
        ("2026-W48", date(2026, 11, 23)),
    ]
    assert [(r.joined, r.left, r.net, r.active_at_end) for r in rows] == [
        (4, 0, 4, 4),
        (1, 1, 0, 4),
        (0, 0, 0, 4),
        (2, 2, 0, 4),
    ]
    last_two = list_growth(session, newsletter_id=nid, weeks=2, until=AT)
    assert last_two == rows[-2:]  # active_at_end still counts from the first week
    everything = list_growth(session, until=AT)
    assert (everything[-1].joined, everything[-1].active_at_end) == (3, 5)
    only_other = list_growth(session, newsletter_id=other, until=AT)
    # The other newsletter sees its import and the bounce that applies to every newsletter.
    assert [(r.week, r.joined, r.left) for r in only_other] == [("2026-W48", 1, 1)]
    later = list_growth(session, newsletter_id=nid, until=datetime(2026, 12, 9, tzinfo=UTC))
    assert [(r.week, r.joined, r.active_at_end) for r in later[-2:]] == [
        ("2026-W49", 1, 5),
        ("2026-W50", 0, 5),
    ]


def test_no_events_no_growth(session: Session) -> None:
    assert list_growth(session, until=AT) == []


def test_csv_json_and_table_shapes(seeded: Session, sent: Sent) -> None:
    rows = edition_stats(seeded)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == 3
    first = next(r for r in parsed if r["edition_id"] == str(sent.first))
    assert first["unsubscribe_rate"] == "0.75" and first["recipients"] == "5"
    assert first["unsubscribes_complaint"] == "1" and first["unsubscribes_bounce"] == "1"
    assert "unsubscribes_by_source" not in first
    assert datetime.fromisoformat(first["sent_at"]).tzinfo is not None
    data = json.loads(to_json(rows))
    one = next(r for r in data if r["edition_id"] == sent.first)
    assert one["unsubscribe_rate"] == 0.75 and one["unsubscribes_by_source"]["page"] == 1
    assert isinstance(one["sent"], int) and datetime.fromisoformat(one["sent_at"])
    growth = [WeekGrowth("2026-W48", date(2026, 11, 23), 3, 1, 2, 10)]
    assert to_csv(growth) == (
        "week,week_start,joined,left,net,active_at_end\n2026-W48,2026-11-23,3,1,2,10\n"
    )
    both = json.loads(report_json(rows, growth))
    assert both["growth"][0]["week_start"] == "2026-11-23" and len(both["editions"]) == 3
    table = to_table(rows).splitlines()
    assert table[0].split()[:3] == ["id", "newsletter", "date"]
    assert any("75.00" in line and "weekly-ai-tool-verdicts" in line for line in table)
    assert "+2" in to_table(growth) and to_csv([]) == "" and to_table([]) == ""


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chart_png_and_svg(seeded: Session, sent: Sent) -> None:
    rows = edition_stats(seeded)
    growth = [WeekGrowth("2026-W48", date(2026, 11, 23), 3, 1, 2, 10)]
    png = draw_chart(rows, growth, fmt="png")
    assert png.startswith(PNG_SIGNATURE) and _png_size(png) == (800, 400)
    title = "Tool <Deals> & $5 $x$"
    svg = draw_chart(rows, fmt="svg", title=title)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag.endswith("svg")
    assert title in "".join(root.itertext())
    assert b"<script" not in svg and b"<Deals>" not in svg  # escaped, never raw markup


def test_empty_chart_says_so() -> None:
    png = draw_chart([], fmt="png")
    assert png.startswith(PNG_SIGNATURE) and _png_size(png) == (800, 400)
    svg = draw_chart([], fmt="svg")
    ET.fromstring(svg)
    assert EMPTY_MESSAGE.encode() in svg
    with pytest.raises(ValueError, match="png or svg"):
        # A format the signature rules out, on purpose: the refusal at run time is the test.
        draw_chart([], fmt="gif")  # type: ignore[arg-type]


def _cli(settings: Settings, *args: str) -> Any:
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url, "COLUMNS": "200"}
    # The CLI reads the real clock; the test pins it to the fixture's week.
    pinned = CLI_CLOCK.set(fixed_clock(AT))
    try:
        return CliRunner().invoke(app, ["stats", *args], env=env)
    finally:
        CLI_CLOCK.reset(pinned)


def test_stats_command(seeded: Session, settings: Settings, sent: Sent, tmp_path: Path) -> None:
    table = _cli(settings)
    assert table.exit_code == 0, table.output
    growth = table.stdout.split("list growth per ISO week (UTC):\n")[1].splitlines()
    # The fixture's four unsubscribe events (no join events: its subscribers were inserted);
    # active at the end of the week is today's real count, not the running sum (-4).
    active = seeded.exec(
        select(func.count()).select_from(Subscription).where(Subscription.status == "active")
    ).one()
    assert growth[1].split() == ["2026-W48", "2026-11-23", "0", "4", "-4", str(active)]
    first = next(line.split() for line in table.stdout.splitlines() if line.split()[0] == "1")
    # recipients, sent, delivered, failed, hard, soft, bounce %, complaints, compl %, unsubs,
    # unsub %
    assert first[4:15] == ["5", "4", "3", "1", "2", "2", "40.00", "1", "25.00", "3", "75.00"]
    out = _cli(settings, "--newsletter", "tool-deals", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [e["edition_id"] for e in data["editions"]] == [sent.other_newsletter]
    # Only the two events with no newsletter reach another newsletter's growth.
    assert [(w["week"], w["left"]) for w in data["growth"]] == [("2026-W48", 2)]
    out = _cli(settings, "--format", "csv", "--chart", str(tmp_path / "c.svg"))
    assert out.exit_code == 0, out.output
    editions, weeks = out.stdout.split("\n\n")
    assert editions.startswith("edition_id,newsletter_slug,subject,")
    assert len(editions.splitlines()) == 4  # header and three editions
    assert weeks.startswith("week,week_start,joined,left,net,active_at_end\n2026-W48,")
    ET.fromstring((tmp_path / "c.svg").read_bytes())
    png = tmp_path / "c.PNG"
    assert _cli(settings, "--chart", str(png)).exit_code == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_stats_command_errors(seeded: Session, settings: Settings, tmp_path: Path) -> None:
    bad = _cli(settings, "--chart", str(tmp_path / "chart.gif"))
    assert bad.exit_code == 2 and "must end in .png or .svg" in bad.stderr
    assert not (tmp_path / "chart.gif").exists()
    unknown = _cli(settings, "--newsletter", "nope")
    assert unknown.exit_code == 1 and "newsletter 'nope' does not exist" in unknown.stderr
    assert "Traceback" not in unknown.output


def test_aggregates_on_postgresql(postgres_url: str, settings: Settings, tmp_path: Path) -> None:
    pg = settings.model_copy(update={"database_url": postgres_url})
    engine = make_engine(postgres_url)
    upgrade(engine)
    subscribers = tmp_path / "s.csv"
    subscribers.write_text("email\n" + "".join(f"g{i}@example.com\n" for i in range(4)))
    try:
        with Session(engine, expire_on_commit=False) as session:
            publish.default_newsletter(session, pg)
            importing.import_comparisons(session, path=EXAMPLES)
            importing.import_subscribers(
                session, now=IMPORTED_AT, path=subscribers, default_newsletter=pg.newsletter
            )
            session.commit()
            edition_id = (
                publish.draft_edition(session, settings=pg, newsletter_slug=None, at=AT).edition.id
                or 0
            )
            publish.send_edition(
                session, edition_id=edition_id, settings=pg, backend=MemoryBackend()
            )
            g0, g1 = session.exec(select(Subscriber).order_by(col(Subscriber.id))).all()[:2]
            session.add_all(
                [
                    mail_event(edition_id, g0, "delivered", "1"),
                    mail_event(edition_id, g0, "delivered", "2"),
                    mail_event(edition_id, g1, "bounced_hard", "3"),
                    left(edition_id, g1, "bounce", None),
                    # Sunday 23:30 in UTC, already Monday in Tokyo: week 47 all the same.
                    _event("2026-11-22T23:30:00+00:00", "subscribed", "operator", None, g0.id or 0),
                ]
            )
            session.commit()
            (row,) = edition_stats(session)
            assert isinstance(row, EditionStats)
            assert (row.recipients, row.sent, row.delivered, row.bounced_hard) == (4, 4, 1, 1)
            assert (row.unsubscribes, row.unsubscribe_rate) == (1, 0.25)
            session.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
            # Until the last event (the imports, stamped when they were written): no real clock.
            last = session.execute(text("SELECT MAX(created_at) FROM subscriptionevent")).scalar()
            assert last is not None
            growth = {w.week: w for w in list_growth(session, until=last, today=True)}
            assert (growth["2026-W47"].joined, growth["2026-W47"].left) == (1, 0)
            assert growth["2026-W48"].left == 1  # the bounce, at AT
            # The four imports happened now, on the server's clock.
            assert sum(w.joined for w in growth.values()) == 5
            assert max(growth.values(), key=lambda w: w.week_start).active_at_end == 4
    finally:
        engine.dispose()


def _edition_stats(edition_id: int, day: int, recipients: int, unsubscribes: int) -> Any:
    from datetime import UTC, datetime

    from newsletter.operations.stats import EditionStats

    at = datetime(2026, 11, day, 9, tzinfo=UTC)
    return EditionStats(
        edition_id,
        "weekly",
        "s",
        "sent",
        at,
        at,
        recipients,
        recipients,
        0,
        0,
        0,
        0,
        0,
        unsubscribes,
        0.0,
    )


def test_chart_counts_are_whole_numbers_and_dates_never_repeat() -> None:
    """Small counts used to get ticks at 0.5 and two editions on one day the same label."""
    from newsletter.operations.chart import build_figure

    rows = [_edition_stats(1, 2, 3, 1), _edition_stats(2, 2, 2, 0), _edition_stats(3, 9, 1, 1)]
    growth = [WeekGrowth("2026-W48", date(2026, 11, 23), 1, 1, 0, 3)]
    figure = build_figure(rows, growth)
    for axes in figure.axes:
        ticks = axes.get_yticks()
        assert all(float(t).is_integer() for t in ticks), ticks
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["2026-11-02 #1", "2026-11-02 #2", "2026-11-09"]


def test_the_narrow_chart_stacks_its_panels_for_a_phone(seeded: Session, sent: Sent) -> None:
    growth = [WeekGrowth("2026-W48", date(2026, 11, 23), 3, 1, 2, 10)]
    png = draw_chart(edition_stats(seeded), growth, fmt="png", narrow=True)
    assert _png_size(png) == (400, 640)
