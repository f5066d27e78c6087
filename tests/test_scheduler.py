"""The weekly schedule with a controllable clock: weeks across a DST change, a missed send
caught up after a restart, approval holds, pause/skip/resume, local-time waves, and two
schedulers at once on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends import memory
from newsletter.backends.memory import MemoryBackend
from newsletter.config import Settings
from newsletter.edition.content import ComparisonData
from newsletter.edition.timing import WeeklyRule
from newsletter.operations import schedule_files, schedules
from newsletter.sending import ledger
from newsletter.service import scheduler
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import (
    Delivery,
    Edition,
    Schedule,
    ScheduleSkip,
    Subscriber,
    Subscription,
)

from .conftest import comparison_dict

BERLIN = ZoneInfo("Europe/Berlin")
SLUG = "weekly-ai-tool-verdicts"


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


def write_schedule(directory: Path, **fields: object) -> Path:
    values: dict[str, object] = {
        "slug": SLUG,
        "name": "Weekly AI Tool Verdicts",
        "send": "Monday 09:00",
        "timezone": "Europe/Berlin",
        "draft_before": "3h",
    } | fields
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{values['slug']}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


#: When the tests' schedule files are loaded: before every date the tests drive the clock to.
SYNCED_AT = datetime(2026, 11, 1, tzinfo=UTC)


def sync(session: Session, directory: Path, settings: Settings) -> None:
    schedules.sync(
        session, schedule_files.load(directory), default_site_url=settings.site_url, now=SYNCED_AT
    )
    session.commit()


def publish_daily(session: Session, start: datetime, days: int) -> None:
    """One comparison published every day at 12:00 UTC."""
    records = [
        ComparisonData.model_validate(
            comparison_dict(
                f"day-{i}", published_at=(start + timedelta(days=i, hours=12)).isoformat()
            )
        )
        for i in range(days)
    ]
    store.upsert_comparisons(session, records=records)
    session.commit()


def subscribe(session: Session, settings: Settings, n: int, zone: str | None = None) -> None:
    newsletter = store.get_newsletter(session, slug=SLUG)
    people = [
        Subscriber(
            email=f"p{zone}{i}@example.com".lower().replace("/", "-"),
            email_key=f"p{zone}{i}@example.com".lower().replace("/", "-"),
            timezone=zone,
        )
        for i in range(n)
    ]
    session.add_all(people)
    session.flush()
    session.add_all(
        Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0) for p in people
    )
    session.commit()


def run_clock(
    session: Session,
    settings: Settings,
    start: datetime,
    end: datetime,
    step: timedelta = timedelta(minutes=10),
    skip: Callable[[datetime], bool] = lambda _: False,
) -> list[tuple[datetime, str]]:
    """Tick every ``step`` from ``start`` to ``end`` (except when ``skip`` says the
    scheduler was down); what each tick did, with its time."""
    log = []
    now = start
    while now < end:
        if not skip(now):
            for line in scheduler.tick(session, settings, now=now, make_backend=MemoryBackend):
                log.append((now, line))
        now += step
    return log


@pytest.fixture
def planned(seeded: Session, settings: Settings, tmp_path: Path) -> Iterator[Path]:
    memory.reset()
    directory = tmp_path / "schedules"
    write_schedule(directory)
    sync(seeded, directory, settings)
    yield directory
    memory.reset()


def editions(session: Session) -> list[Edition]:
    session.expire_all()
    newsletter = store.get_newsletter(session, slug=SLUG)
    return list(
        session.exec(
            select(Edition).where(Edition.newsletter_id == newsletter.id).order_by(col(Edition.id))
        ).all()
    )


@pytest.mark.one_database(
    "calendar arithmetic over weeks of ticks: 40-50 s on PostgreSQL; the SQL of a tick runs "
    "there in the other tests"
)
def test_weeks_across_the_autumn_dst_change_send_once_at_nine_local(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    # Europe/Berlin leaves summer time on Sunday 2026-10-25.
    publish_daily(seeded, datetime(2026, 10, 12, tzinfo=UTC), 28)
    subscribe(seeded, settings, 3)
    log = run_clock(
        seeded, settings, datetime(2026, 10, 18, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    )
    sent = [e for e in editions(seeded) if e.status == "sent"]
    assert [e.period_key for e in sent] == ["2026-W43", "2026-W44", "2026-W45"]
    started = [t for t, line in log if "started edition" in line]
    # 09:00 in Berlin: 07:00 UTC in summer time, 08:00 UTC after the change.
    assert [t.astimezone(BERLIN).strftime("%a %H:%M") for t in started] == ["Mon 09:00"] * 3
    assert [t.strftime("%H:%M") for t in started] == ["07:00", "08:00", "08:00"]
    drafted = [t for t, line in log if "drafted" in line]
    assert [t.astimezone(BERLIN).strftime("%a %H:%M") for t in drafted] == ["Mon 06:00"] * 3
    # Each subscriber got each edition exactly once, and the periods tile without a gap.
    assert len(memory.outbox) == 9
    assert len({(m.recipient, m.message_id) for m in memory.outbox}) == 9
    for earlier, later in zip(sent, sent[1:], strict=False):
        assert earlier.period_end == later.period_start
    # Ticking on (restarts, overlaps) sends nothing again.
    again = run_clock(
        seeded, settings, datetime(2026, 10, 19, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    )
    assert [line for _, line in again if "started" in line or "drafted" in line] == []
    assert len(memory.outbox) == 9


@pytest.mark.one_database(
    "calendar arithmetic over weeks of ticks: 40-50 s on PostgreSQL; the SQL of a tick runs "
    "there in the other tests"
)
def test_spring_forward_day_neither_shifts_nor_doubles(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    """A send at 02:30 on the night the clocks jump from 02:00 to 03:00 (2027-03-28, Berlin)."""
    directory = tmp_path / "spring"
    write_schedule(directory, send="Sunday 02:30", draft_before="1h")
    sync(seeded, directory, settings)
    publish_daily(seeded, datetime(2027, 3, 15, tzinfo=UTC), 20)
    subscribe(seeded, settings, 1)
    memory.reset()
    log = run_clock(
        seeded,
        settings,
        datetime(2027, 3, 20, tzinfo=UTC),
        datetime(2027, 4, 5, tzinfo=UTC),
        step=timedelta(minutes=5),
    )
    started = [t for t, line in log if "started" in line]
    assert [t.astimezone(BERLIN).strftime("%m-%d %H:%M") for t in started] == [
        "03-21 02:30",
        "03-28 03:30",  # 02:30 does not exist that night: it happens at 03:30 (once)
        "04-04 02:30",
    ]
    assert len(memory.outbox) == 3


def test_a_send_missed_by_a_restart_is_caught_up_and_an_old_one_is_reported(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    publish_daily(seeded, datetime(2026, 11, 9, tzinfo=UTC), 28)
    subscribe(seeded, settings, 2)
    # The scheduler is down from Monday 05:00 to 11:00 UTC (the 09:00 Berlin send is 08:00 UTC).
    down = (datetime(2026, 11, 23, 5, tzinfo=UTC), datetime(2026, 11, 23, 11, tzinfo=UTC))
    log = run_clock(
        seeded,
        settings,
        datetime(2026, 11, 22, tzinfo=UTC),
        datetime(2026, 11, 24, tzinfo=UTC),
        skip=lambda t: down[0] <= t < down[1],
    )
    started = [t for t, line in log if "started" in line]
    assert started == [datetime(2026, 11, 23, 11, tzinfo=UTC)]  # the first tick back up
    assert len(memory.outbox) == 2

    # Down for the whole next Monday past the grace time: not sent late, but reported.
    log = run_clock(
        seeded,
        settings,
        datetime(2026, 12, 1, 12, tzinfo=UTC),
        datetime(2026, 12, 2, tzinfo=UTC),
    )
    assert [line for _, line in log if "started" in line] == []
    schedule, newsletter = schedules.active_schedules(seeded)[0]
    later = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert scheduler.missed(seeded, schedule, newsletter, later) == "2026-W49"


def test_approval_holds_the_send_alerts_editors_once_then_sends(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "approval"
    write_schedule(directory, approval_required=True, editors=["editor@example.com"])
    sync(seeded, directory, settings)
    publish_daily(seeded, datetime(2026, 11, 16, tzinfo=UTC), 7)
    subscribe(seeded, settings, 2)
    memory.reset()
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    log = run_clock(seeded, settings, monday, monday + timedelta(hours=12))
    held = [line for _, line in log if "held" in line]
    assert len(held) == 1 and "editors alerted" in held[0]
    assert [m.recipient for m in memory.outbox] == ["editor@example.com"]  # once, not per tick
    (edition,) = editions(seeded)
    assert edition.status == "draft" and edition.alerted_at is not None

    publish.approve_edition(
        seeded, edition_id=edition.id or 0, by="Ada", now=monday + timedelta(hours=12)
    )
    log = run_clock(seeded, settings, monday + timedelta(hours=12), monday + timedelta(hours=13))
    assert any("started" in line for _, line in log)
    assert sorted(m.recipient for m in memory.outbox) == [
        "editor@example.com",
        "pnone0@example.com",
        "pnone1@example.com",
    ]


def test_the_approval_alert_says_when_cards_were_made_compact_for_size(
    seeded: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drafted by the scheduler with nobody at a terminal: the editors hear about size."""
    from email import message_from_bytes

    from newsletter.edition import rendering

    monkeypatch.setattr(rendering, "CLIP_BUDGET", 30_000)
    directory = tmp_path / "approval"
    write_schedule(directory, approval_required=True, editors=["editor@example.com"])
    sync(seeded, directory, settings)
    publish_daily(seeded, datetime(2026, 11, 16, tzinfo=UTC), 7)
    memory.reset()
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    run_clock(seeded, settings, monday, monday + timedelta(hours=12))
    (alert,) = memory.outbox
    message = message_from_bytes(alert.data)
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert "Size: " in body and "compact lines" in body
    assert "https://news.example.com/console/editions/" in body  # not only shell commands


def test_pause_skip_and_resume(seeded: Session, settings: Settings, planned: Path) -> None:
    publish_daily(seeded, datetime(2026, 11, 9, tzinfo=UTC), 28)
    subscribe(seeded, settings, 1)
    schedule = seeded.exec(select(Schedule)).one()
    schedule.paused = True
    seeded.commit()
    log = run_clock(
        seeded, settings, datetime(2026, 11, 22, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)
    )
    assert log == [] and editions(seeded) == []
    schedule.paused = False
    newsletter = store.get_newsletter(seeded, slug=SLUG)
    seeded.add(ScheduleSkip(newsletter_id=newsletter.id or 0, period_key="2026-W49"))
    seeded.commit()
    schedules.sync(
        seeded, schedule_files.load(planned), default_site_url=settings.site_url, now=SYNCED_AT
    )
    seeded.commit()
    assert seeded.exec(select(Schedule)).one().paused is False  # a sync keeps the switch
    run_clock(
        seeded, settings, datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 12, 9, tzinfo=UTC)
    )
    assert [e.period_key for e in editions(seeded)] == ["2026-W50"]  # W49 skipped


def test_local_time_delivery_sends_in_hourly_waves(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "local"
    write_schedule(directory, local_time=True)
    sync(seeded, directory, settings)
    publish_daily(seeded, datetime(2026, 11, 16, tzinfo=UTC), 7)
    subscribe(seeded, settings, 1, zone="Asia/Tokyo")  # 09:00 there is 00:00 UTC
    subscribe(seeded, settings, 1, zone="America/New_York")  # 14:00 UTC
    subscribe(seeded, settings, 1, zone="Asia/Kolkata")  # 03:30 UTC -> the 03:00 wave
    subscribe(seeded, settings, 1)  # no zone: the newsletter's, 08:00 UTC
    # Starting only (no backend): the send loop runs on the real clock, which is past these
    # waves; the test reads when each delivery is due.
    started = []
    now = datetime(2026, 11, 22, tzinfo=UTC)
    while now < datetime(2026, 11, 23, tzinfo=UTC):
        if any("started" in line for line in scheduler.tick(seeded, settings, now=now)):
            started.append(now)
        now += timedelta(minutes=10)
    # The first wave is 09:00 at UTC+14 (Sunday 19:00 UTC): the edition starts then.
    assert started == [datetime(2026, 11, 22, 19, tzinfo=UTC)]
    due = {
        email.split("@")[0]: cast(datetime, retry_at).astimezone(UTC).strftime("%d %H:%M")
        for email, retry_at in seeded.exec(
            select(Subscriber.email, Delivery.retry_at).join(
                Delivery,
                col(Delivery.subscriber_id) == Subscriber.id,
            )
        )
    }
    assert due == {
        "pasia-tokyo0": "23 00:00",
        "pasia-kolkata0": "23 03:00",
        "pnone0": "23 08:00",
        "pamerica-new_york0": "23 14:00",
    }


def test_a_pending_delivery_waits_for_its_wave(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger side of the waves: a send claims only deliveries whose time has come."""
    add_subscribers(2)
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    early, late = seeded.exec(select(Delivery).order_by(col(Delivery.id))).all()
    late.retry_at = datetime.now(UTC) + timedelta(hours=3)
    seeded.commit()
    memory.reset()
    report = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert report.run.sent == 1 and report.edition.status == "sending"
    assert report.next_retry_at is not None and report.next_retry_at > datetime.now(UTC)
    assert [m.recipient for m in memory.outbox] == ["sub0@example.com"]
    assert ledger.counts(seeded, edition_id=draft)["pending"] == 1

    # Polled again before the wave (workers look every few seconds): nothing is claimable, so
    # the edition is not even rendered.
    def no_render(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered for a pass with nothing to send")

    monkeypatch.setattr("newsletter.publish.sending.prepare", no_render)
    again = publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=MemoryBackend()
    )
    assert again.run.attempted == 0 and again.edition.status == "sending"
    assert again.next_retry_at == report.next_retry_at


@pytest.mark.one_database("it makes its own PostgreSQL database")
def test_two_schedulers_at_once_on_postgresql(
    postgres_url: str, settings: Settings, tmp_path: Path
) -> None:
    pg = settings.model_copy(update={"database_url": postgres_url})
    engine = make_engine(postgres_url)
    upgrade(engine)
    directory = tmp_path / "pg"
    write_schedule(directory)
    with Session(engine, expire_on_commit=False) as session:
        sync(session, directory, pg)
        publish_daily(session, datetime(2026, 11, 9, tzinfo=UTC), 21)
        subscribe(session, pg, 40)
    memory.reset()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def one_scheduler() -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                now = datetime(2026, 11, 15, tzinfo=UTC)
                while now < datetime(2026, 12, 1, tzinfo=UTC):
                    barrier.wait(timeout=30)  # both tick at the same instant, every time
                    scheduler.tick(session, pg, now=now, make_backend=MemoryBackend)
                    now += timedelta(minutes=30)
        except BaseException as exc:  # re-raised below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=one_scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    with Session(engine) as session:
        rows = session.exec(select(Edition.period_key, Edition.status)).all()
    engine.dispose()
    assert sorted(rows) == [("2026-W47", "sent"), ("2026-W48", "sent"), ("2026-W49", "sent")]
    per_person: dict[tuple[str, str], int] = {}
    for m in memory.outbox:
        per_person[(m.recipient, m.message_id)] = per_person.get((m.recipient, m.message_id), 0) + 1
    assert len(per_person) == 40 * 3 and set(per_person.values()) == {1}


def test_an_approval_given_after_the_grace_time_still_sends(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "late"
    write_schedule(directory, approval_required=True, editors=["editor@example.com"])
    sync(seeded, directory, settings)
    publish_daily(seeded, datetime(2026, 11, 16, tzinfo=UTC), 7)
    subscribe(seeded, settings, 2)
    memory.reset()
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    run_clock(seeded, settings, monday, monday + timedelta(hours=12))
    (edition,) = editions(seeded)
    publish.approve_edition(
        seeded, edition_id=edition.id or 0, by="Ada", now=monday + timedelta(hours=16)
    )  # 16 h late
    log = run_clock(seeded, settings, monday + timedelta(hours=16), monday + timedelta(hours=17))
    assert any("started approved edition" in line for _, line in log)
    assert editions(seeded)[0].status == "sent"
    assert len([m for m in memory.outbox if m.recipient != "editor@example.com"]) == 2


def test_the_scheduler_finishes_sends_after_the_grace_time(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    """Retries and later waves come due after the occurrence left the grace window: a
    scheduler without workers must still send them."""
    publish_daily(seeded, datetime(2026, 11, 16, tzinfo=UTC), 7)
    subscribe(seeded, settings, 3)
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    for now in (monday + timedelta(hours=5), monday + timedelta(hours=8)):  # draft, then start
        scheduler.tick(seeded, settings, now=now)  # no backend: starts, sends nothing
    (edition,) = editions(seeded)
    assert edition.status == "sending"
    memory.reset()
    scheduler.tick(seeded, settings, now=monday + timedelta(days=2), make_backend=MemoryBackend)
    assert editions(seeded)[0].status == "sent" and len(memory.outbox) == 3


def test_a_cancelled_edition_does_not_use_up_its_period(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    publish_daily(seeded, datetime(2026, 11, 9, tzinfo=UTC), 21)
    subscribe(seeded, settings, 1)
    run_clock(
        seeded, settings, datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 17, tzinfo=UTC)
    )
    run_clock(
        seeded, settings, datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 23, 6, tzinfo=UTC)
    )
    w47, w48 = editions(seeded)
    assert w48.status == "draft"
    publish.cancel_edition(seeded, edition_id=w48.id or 0, reason="wrong week")
    run_clock(
        seeded, settings, datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    w49 = editions(seeded)[-1]
    assert w49.period_key == "2026-W49" and w49.status == "sent"
    assert w49.period_start == w47.period_end  # W48's comparisons go out with W49


def test_an_international_from_domain_is_stored_in_ascii(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "idn"
    write_schedule(directory, **{"from": "Bücher News <news@bücher.example>"})
    sync(seeded, directory, settings)
    newsletter = store.get_newsletter(seeded, slug=SLUG)
    assert "<news@xn--bcher-kva.example>" in (newsletter.from_address or "")
    sender = publish.sender_of(newsletter, settings)
    assert sender.addr_spec == "news@xn--bcher-kva.example"


def test_a_zone_that_names_a_folder_is_a_clear_problem(tmp_path: Path) -> None:
    directory = tmp_path / "zones"
    write_schedule(directory, timezone="Europe")
    with pytest.raises(schedule_files.ScheduleFileError) as caught:
        schedule_files.load(directory)
    assert caught.value.problems == [
        f"{SLUG}.toml: timezone: unknown IANA time zone 'Europe' (e.g. Europe/Berlin)"
    ]


def test_a_full_schedule_file_gives_each_value_and_a_short_one_the_defaults(
    tmp_path: Path,
) -> None:
    full = write_schedule(
        tmp_path / "full",
        name="  Weekly AI Tool Verdicts  ",
        send="mon 9:05",
        timezone="UTC",
        draft_before="90m",
        approval_required=True,
        editors=["Editor@Example.com", "b@bücher.example"],
        item_cap=12,
        site_url="https://aitoolverdicts.example",
        local_time=True,
        writer="claude",
        **{"from": "Verdicts <news@bücher.example>"},
    )
    (spec,) = schedule_files.load(full.parent)
    assert spec == schedule_files.ScheduleSpec(
        path=full,
        slug=SLUG,
        name="Weekly AI Tool Verdicts",
        rule=WeeklyRule(0, time(9, 5), "UTC"),
        from_address="Verdicts <news@xn--bcher-kva.example>",
        draft_before=timedelta(minutes=90),
        approval_required=True,
        editors=("Editor@example.com", "b@xn--bcher-kva.example"),
        item_cap=12,
        site_url="https://aitoolverdicts.example",
        local_time=True,
        writer="claude",
    )
    short = tmp_path / "short" / f"{SLUG}.toml"
    short.parent.mkdir()
    short.write_text(
        f'slug = "{SLUG}"\nname = "N"\nsend = "Monday 09:00"\ntimezone = "Europe/Berlin"\n'
    )
    (spec,) = schedule_files.load(short.parent)
    assert spec == schedule_files.ScheduleSpec(
        path=short, slug=SLUG, name="N", rule=WeeklyRule(0, time(9), "Europe/Berlin")
    )


def test_a_schedule_file_names_every_problem_at_once(tmp_path: Path) -> None:
    """One check names every field that is wrong, unknown names first, and nothing else."""
    path = tmp_path / "schedules" / "mine.toml"
    path.parent.mkdir()
    path.write_text(
        'slug = "Mine"\nname = 5\nfrom = "nobody"\ntimezone = "Mars/Olympus"\n'
        'send = "Someday 09:00"\ndraft_before = "7d"\napproval_required = "yes"\n'
        'editors = ["not-an-address", "ok@example.com"]\nitem_cap = 8.0\n'
        'site_url = "ftp://x.example"\nlocal_time = 1\nwriter = "gpt"\ncolour = "blue"\n'
    )
    with pytest.raises(schedule_files.ScheduleFileError) as caught:
        schedule_files.load(path.parent)
    known = ", ".join(schedule_files.FIELDS)
    assert caught.value.problems == [
        f"mine.toml: colour: unknown field; known: {known}",
        "mine.toml: slug: 'Mine' is not lower-case letters, digits and hyphens, and differs "
        "from the file name (mine.toml)",
        "mine.toml: name: expected a non-empty string",
        'mine.toml: from: expected "Name <address>": An email address must have an @-sign.',
        "mine.toml: timezone: unknown IANA time zone 'Mars/Olympus' (e.g. Europe/Berlin)",
        "mine.toml: send: 'Someday 09:00': unknown weekday 'Someday'",
        "mine.toml: draft_before: at most 6 days (the next send comes after 7)",
        "mine.toml: approval_required: expected true or false",
        "mine.toml: editors: 'not-an-address': An email address must have an @-sign.",
        "mine.toml: item_cap: expected a whole number from 1 to 50",
        "mine.toml: site_url: expected an http(s) URL",
        "mine.toml: local_time: expected true or false",
        "mine.toml: writer: 'gpt' is not one of rules, claude, huggingface",
    ]
    assert list(schedule_files.FIELDS)[:5] == ["slug", "name", "from", "timezone", "send"]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("slug", "7", "slug: expected a non-empty string"),
        ("name", '"  "', "name: expected a non-empty string"),
        ("name", '"Two\\nlines"', "name: contains control characters or line breaks"),
        ("name", f'"{"n" * 201}"', "name: at most 200 characters"),
        ("from", '"Verdicts <>"', 'from: expected "Name <address>": missing'),
        ("send", "09:00:00", "send: expected a non-empty string"),
        ("send", '"Monday 25:00"', "send: 'Monday 25:00': 25:00 is not a time of day"),
        ("send", "{ day = 'Monday' }", "send: expected a non-empty string"),
        ("draft_before", '"soon"', "draft_before: 'soon': expected minutes, hours or days"),
        ("draft_before", "3", "draft_before: expected a non-empty string"),
        ("approval_required", "true", "editors: approval_required needs at least one editor"),
        ("editors", '"editor@example.com"', "editors: expected a list of addresses"),
        ("editors", '["editor@example.com", 5]', "editors: expected a list of addresses"),
        ("item_cap", "true", "item_cap: expected a whole number from 1 to 50"),
        ("item_cap", '"8"', "item_cap: expected a whole number from 1 to 50"),
        ("item_cap", "51", "item_cap: expected a whole number from 1 to 50"),
        ("site_url", f'"https://{"p" * 500}"', "site_url: at most 500 characters"),
        ("writer", "1", "writer: expected a non-empty string"),
        ("from_address", '"a@example.com"', "from_address: unknown field; known: slug, name"),
    ],
)
def test_a_wrong_value_is_named_with_what_is_allowed(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    fields = {"slug": SLUG, "name": "N", "send": "Monday 09:00", "timezone": "UTC"}
    text = "".join(f'{k} = "{v}"\n' for k, v in fields.items() if k != key)
    path = tmp_path / f"{SLUG}.toml"
    path.write_text(f"{text}{key} = {value}\n")
    spec, problems = schedule_files.parse_file(path)
    assert spec is None
    assert len(problems) == 1 and problems[0].startswith(f"{SLUG}.toml: {problem}"), problems


def test_a_schedule_file_names_its_writer_or_is_refused(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    write_schedule(tmp_path / "bad", writer="gpt")
    with pytest.raises(schedule_files.ScheduleFileError) as caught:
        schedule_files.load(tmp_path / "bad")
    assert caught.value.problems == [
        f"{SLUG}.toml: writer: 'gpt' is not one of rules, claude, huggingface"
    ]
    write_schedule(tmp_path / "good", writer="huggingface")
    sync(seeded, tmp_path / "good", settings)
    newsletter = store.get_newsletter(seeded, slug=SLUG)
    assert newsletter.writer == "huggingface"
    from newsletter import writers

    assert writers.name_for(settings, newsletter) == "huggingface"
    newsletter.writer = None
    assert writers.name_for(settings, newsletter) == settings.writer == "rules"


def test_sync_warns_when_a_changed_day_lands_in_a_week_already_sent(
    seeded: Session, settings: Settings, tmp_path: Path
) -> None:
    """Moving the send day inside a week that already had its edition skips that week; the
    operator is told at sync time rather than finding out on the day."""
    now = datetime(2026, 11, 25, 15, tzinfo=UTC)  # a Wednesday
    directory = tmp_path / "moved"
    write_schedule(directory, send="Monday 09:00")
    sync(seeded, directory, settings)
    rule_then = schedule_files.load(directory)[0].rule
    later = rule_then.next_at_or_after(now)
    newsletter = store.get_newsletter(seeded, slug=SLUG)
    # Pretend this week's edition went out already, under the key the new day will use.
    moved_day = (later - timedelta(days=1)).astimezone(BERLIN)
    write_schedule(directory, send=f"{moved_day:%A} 09:00")
    rule_now = schedule_files.load(directory)[0].rule
    key = rule_now.key(rule_now.next_at_or_after(now))
    seeded.add(
        Edition(
            newsletter_id=newsletter.id or 0,
            period_key=key,
            period_start=now - timedelta(days=7),
            period_end=now,
            status="sent",
            subject="Already out",
        )
    )
    seeded.commit()
    report = schedules.sync(
        seeded, schedule_files.load(directory), default_site_url=settings.site_url, now=now
    )
    assert report.updated == [SLUG]
    assert len(report.warnings) == 1 and key in report.warnings[0]


def test_an_operator_moves_a_drafts_send_time_earlier_or_later(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    """The scheduler sends a moved edition at its new time, once; the time must be ahead and
    before the next regular send."""
    publish_daily(seeded, datetime(2026, 11, 23, tzinfo=UTC), 6)
    subscribe(seeded, settings, 2)
    # Monday 2026-11-30 09:00 Berlin is the regular send; the draft is made at 06:00.
    run_clock(
        seeded,
        settings,
        datetime(2026, 11, 30, 4, tzinfo=UTC),
        datetime(2026, 11, 30, 6, tzinfo=UTC),
    )
    (draft,) = editions(seeded)
    assert draft.status == "draft" and draft.id is not None
    sunday = datetime(2026, 11, 30, 7, 30, tzinfo=UTC)  # "now": before the regular send
    later = datetime(2026, 12, 1, 15, 0, tzinfo=BERLIN)  # Tuesday 15:00, past the grace window
    with pytest.raises(publish.RescheduleError, match="has passed"):
        publish.reschedule_edition(
            seeded, edition_id=draft.id, send_at=sunday - timedelta(hours=1), now=sunday
        )
    with pytest.raises(publish.RescheduleError, match="next edition's send"):
        publish.reschedule_edition(
            seeded, edition_id=draft.id, send_at=datetime(2026, 12, 7, 9, tzinfo=BERLIN), now=sunday
        )
    before, after = publish.reschedule_edition(
        seeded, edition_id=draft.id, send_at=later, now=sunday
    )
    seeded.commit()
    assert before == datetime(2026, 11, 30, 8, tzinfo=UTC) and after == later
    # The regular time passes without a send; Tuesday 15:00 Berlin sends it, once.
    log = run_clock(
        seeded,
        settings,
        datetime(2026, 11, 30, 7, 40, tzinfo=UTC),
        datetime(2026, 12, 2, tzinfo=UTC),
    )
    started = [t for t, line in log if "started edition" in line]
    assert started == [datetime(2026, 12, 1, 14, 0, tzinfo=UTC)]
    assert len(memory.outbox) == 2
    with pytest.raises(publish.EditionStateError, match="has started"):
        publish.reschedule_edition(
            seeded, edition_id=draft.id, send_at=later + timedelta(hours=1), now=later
        )


def test_a_send_time_moved_before_the_draft_time_goes_then(
    seeded: Session, settings: Settings, planned: Path
) -> None:
    publish_daily(seeded, datetime(2026, 11, 30, tzinfo=UTC), 3)
    subscribe(seeded, settings, 1)
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    draft = publish.draft_edition(seeded, settings=settings, newsletter_slug=SLUG, at=now)
    edition_id = draft.edition.id or 0
    friday = datetime(2026, 12, 4, 10, tzinfo=BERLIN)  # days before Monday's regular send
    publish.reschedule_edition(seeded, edition_id=edition_id, send_at=friday, now=now)
    seeded.commit()
    log = run_clock(seeded, settings, now, datetime(2026, 12, 8, tzinfo=UTC))
    started = [t for t, line in log if "started edition" in line]
    assert started == [datetime(2026, 12, 4, 9, 0, tzinfo=UTC)]
    assert len(memory.outbox) == 1 and [e.status for e in editions(seeded)] == ["sent"]
