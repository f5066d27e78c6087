"""The promises about editions that broke under timing (issue 10): one naming of an edition's
period for every path, one comparison in one live edition, approval that means approval.

The CLI runs in-process with its clock pinned (``CLI_CLOCK``), so these pass on any date.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import publish
from newsletter.backends import memory
from newsletter.backends.memory import MemoryBackend
from newsletter.cli import app
from newsletter.cli.common import CLI_CLOCK
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.edition.timing import Period
from newsletter.service import scheduler
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Edition, EditionItem
from newsletter.web.app import create_app
from tests.conftest import SECRET
from tests.test_scheduler import SLUG, publish_daily, subscribe, sync, write_schedule

#: A Wednesday: the content's ISO week is W49, the next Monday send (Dec 7) is in W50.
WEDNESDAY = datetime(2026, 12, 2, 12, tzinfo=UTC)
EDITOR = "editor@example.com"


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


@pytest.fixture
def cli(settings: Settings) -> Iterator[Any]:
    """Run a command in-process against ``settings``' database, the clock at ``at``."""

    def invoke(*args: str, at: datetime = WEDNESDAY) -> Any:
        env = {
            "NEWSLETTER_DATABASE_URL": settings.database_url,
            "NEWSLETTER_MAIL_BACKEND": "memory://",
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_BASE_URL": "https://news.example.com",
            "NEWSLETTER_JOURNAL_DIR": settings.journal_dir,
            "COLUMNS": "200",
        }
        pinned = CLI_CLOCK.set(fixed_clock(at))
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            CLI_CLOCK.reset(pinned)

    yield invoke


def _editions(session: Session) -> list[Edition]:
    session.expire_all()
    return list(session.exec(select(Edition).order_by(col(Edition.id))).all())


def _received(recipient_prefix: str = "p") -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in memory.outbox:
        if m.recipient.startswith(recipient_prefix):
            counts[m.recipient] = counts.get(m.recipient, 0) + 1
    return counts


def test_manual_draft_run_now_and_the_scheduler_name_one_edition(
    seeded: Session, settings: Settings, tmp_path: Path, cli: Any
) -> None:
    """The reported bug: `edition draft` keyed W49 (content week), run-now and the scheduler
    W50 (send week); both were sent, one person got the same comparisons twice."""
    write_schedule(tmp_path / "s")
    sync(seeded, tmp_path / "s", settings)
    publish_daily(seeded, datetime(2026, 11, 30, tzinfo=UTC), 3)
    subscribe(seeded, settings, 3)

    drafted = cli("edition", "draft", "--at", "2026-12-02T12:00:00+00:00")
    assert drafted.exit_code == 0, drafted.output
    (edition,) = _editions(seeded)
    # What the command reports is the key of the edition it made: the send date's week.
    assert edition.period_key == "2026-W50" and "2026-W50" in drafted.stderr
    assert edition.scheduled_for == datetime(2026, 12, 7, 8, tzinfo=UTC)

    sent = cli("schedule", "run-now", SLUG)
    assert sent.exit_code == 0, sent.output
    assert [e.id for e in _editions(seeded)] == [edition.id]

    # The scheduler's own draft and send times find the same edition, already sent.
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    for hour in range(0, 12):
        scheduler.tick(
            seeded, settings, now=monday + timedelta(hours=hour), make_backend=MemoryBackend
        )
    assert [(e.id, e.status) for e in _editions(seeded)] == [(edition.id, "sent")]
    assert set(_received().values()) == {1} and len(_received()) == 3


def test_a_draft_made_before_the_schedule_keeps_its_comparisons_to_itself(
    seeded: Session, settings: Settings, tmp_path: Path, add_subscribers: Any
) -> None:
    """A draft of another period (made by hand before a schedule existed) holds the same
    comparisons the scheduler's period covers: the scheduler drafts nothing new instead of a
    second edition with them, and sending both mails each comparison once."""
    add_subscribers(2)
    manual = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert manual.edition.period_key == "2026-W48" and manual.selection.items
    write_schedule(tmp_path / "s")
    sync(seeded, tmp_path / "s", settings)
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    for hour in range(0, 12):
        scheduler.tick(
            seeded, settings, now=monday + timedelta(hours=hour), make_backend=MemoryBackend
        )
    assert [e.period_key for e in _editions(seeded)] == ["2026-W48"]
    publish.send_edition(
        seeded, edition_id=manual.edition.id or 0, settings=settings, backend=MemoryBackend()
    )
    assert set(_received("sub").values()) == {1}


@pytest.fixture
def any_db(settings: Settings) -> Iterator[tuple[Session, Settings]]:
    """A store of its own on the test's database (SQLite or PostgreSQL: see database_url)."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    chosen = settings
    from newsletter.audience.importing import import_comparisons
    from tests.conftest import EXAMPLES

    with Session(engine, expire_on_commit=False) as session:
        publish.default_newsletter(session, chosen)
        import_comparisons(session, path=EXAMPLES)
        session.commit()
        yield session, chosen
    engine.dispose()


def test_the_database_refuses_a_comparison_in_two_live_editions(
    any_db: tuple[Session, Settings],
) -> None:
    session, settings = any_db
    first = publish.draft_edition(
        session, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition
    held = store.edition_comparisons(session, edition_id=first.id or 0)
    second = Edition(
        newsletter_id=first.newsletter_id,
        period_key="2026-W50",
        period_start=first.period_start,
        period_end=first.period_end,
        subject="again",
    )
    session.add(second)
    session.commit()
    # Whatever path writes it (a racing draft, hand-written SQL), the index says no.
    session.add(
        EditionItem(
            edition_id=second.id or 0,
            newsletter_id=first.newsletter_id,
            comparison_id=held[0].id or 0,
            position=0,
        )
    )
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    # A cancelled edition frees its comparisons: now the second one may carry them.
    publish.cancel_edition(session, edition_id=first.id or 0)
    session.add(
        EditionItem(
            edition_id=second.id or 0,
            newsletter_id=first.newsletter_id,
            comparison_id=held[0].id or 0,
            position=0,
        )
    )
    session.commit()
    assert [c.id for c in store.edition_comparisons(session, edition_id=second.id or 0)] == [
        held[0].id
    ]


def test_a_racing_draft_gets_a_readable_refusal(
    seeded: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two drafts that both selected before either wrote: the second is refused by the
    database and told which edition holds which comparison (nothing partial is stored)."""
    at = datetime(2026, 11, 25, tzinfo=UTC)
    first = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at).edition
    later = datetime(2026, 12, 2, tzinfo=UTC)
    period = Period("2026-W49", first.period_start, later, "UTC")
    # The second draft's selection ran before the first wrote its items.
    monkeypatch.setattr(
        "newsletter.publish.drafting.store.comparison_ids_taken",
        _taken_after_first_call(store.comparison_ids_taken),
    )
    with pytest.raises(publish.ComparisonTaken, match=rf"already in edition {first.id}"):
        publish.draft_edition(
            seeded, settings=settings, newsletter_slug=None, at=later, period=period
        )
    assert [e.period_key for e in _editions(seeded)] == ["2026-W48"]


def _taken_after_first_call(real: Any) -> Any:
    """``comparison_ids_taken`` that sees nothing the first time (the selection, racing) and
    the truth afterwards (the explanation)."""
    calls = {"n": 0}

    def fake(*args: Any, **kwargs: Any) -> dict[int, int]:
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(*args, **kwargs)

    return fake


# --- approval ------------------------------------------------------------------------------


@pytest.fixture
def held(seeded: Session, settings: Settings, tmp_path: Path, cli: Any) -> int:
    """A newsletter whose schedule requires approval, three subscribers, and its draft."""
    write_schedule(tmp_path / "s", approval_required=True, editors=[EDITOR])
    sync(seeded, tmp_path / "s", settings)
    publish_daily(seeded, datetime(2026, 11, 30, tzinfo=UTC), 3)
    subscribe(seeded, settings, 3)
    out = cli("edition", "draft")
    assert out.exit_code == 0, out.output
    return int(out.stdout.strip())


def test_editors_are_alerted_when_the_draft_is_made(held: int) -> None:
    # Wednesday, days before Monday's send: the alert went with the draft, once.
    assert [m.recipient for m in memory.outbox] == [EDITOR]


def test_no_path_sends_a_draft_that_needs_approval(
    seeded: Session, settings: Settings, held: int, cli: Any
) -> None:
    for command in (["edition", "send", str(held)], ["edition", "start", str(held)]):
        out = cli(*command)
        assert out.exit_code == 1
        line = out.output.strip()
        assert "\n" not in line and "needs an editor's approval" in line
        assert EDITOR in line and f"newsletter edition approve {held}" in line
    out = cli("schedule", "run-now", SLUG)
    assert out.exit_code == 1 and "needs an editor's approval" in out.output
    with pytest.raises(publish.EditionStateError, match="approval"):
        publish.start_edition(seeded, edition_id=held, settings=settings)
    # The scheduler at the send time holds it too.
    monday = datetime(2026, 12, 7, 8, tzinfo=UTC)
    scheduler.tick(seeded, settings, now=monday, make_backend=MemoryBackend)
    assert [e.status for e in _editions(seeded)] == ["draft"]
    assert _received() == {}


def test_a_comparison_edited_after_the_approval_withdraws_it(
    seeded: Session, settings: Settings, held: int, cli: Any
) -> None:
    """The approval covers what the editor saw: an import that changes a carried comparison
    afterwards holds the send until an editor looks again."""
    assert cli("edition", "approve", str(held), "--by", "Ada").exit_code == 0
    lead = store.edition_comparisons(seeded, edition_id=held)[0]
    store.upsert_comparisons(seeded, records=[lead.model_copy(update={"title": "Renamed"})])
    seeded.commit()
    refused = cli("edition", "send", str(held))
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert "\n" not in line and "changed in the store since (Renamed)" in line
    assert "approval is withdrawn" in line and _received() == {}
    status = cli("edition", "status", str(held)).stdout
    assert f"awaits approval from {EDITOR}" in status
    # The scheduler at the send time holds it and tells the editors again.
    before = len(memory.outbox)
    monday = datetime(2026, 12, 7, 8, tzinfo=UTC)
    scheduler.tick(seeded, settings, now=monday, make_backend=MemoryBackend)
    assert [m.recipient for m in memory.outbox[before:]] == [EDITOR]
    assert _received() == {}
    # Approved again, the new text goes out.
    assert cli("edition", "approve", str(held), "--by", "Ada").exit_code == 0
    sent = cli("edition", "send", str(held))
    assert sent.exit_code == 0, sent.output
    assert len(_received()) == 3


def test_status_and_list_say_who_a_held_draft_waits_for(held: int, cli: Any) -> None:
    status = cli("edition", "status", str(held))
    assert f"draft, awaits approval from {EDITOR}" in status.stdout
    assert f"newsletter edition approve {held}" in status.stdout
    listed = cli("edition", "list")
    assert f"draft, awaits approval from {EDITOR}" in listed.stdout


def test_approval_can_be_withdrawn_before_the_send_starts(
    seeded: Session, held: int, cli: Any
) -> None:
    assert cli("edition", "approve", str(held), "--by", "Ada").exit_code == 0
    assert "awaits" not in cli("edition", "status", str(held)).stdout
    out = cli("edition", "unapprove", str(held), "--by", "Ada")
    assert out.exit_code == 0 and "withdrawn" in out.stdout
    refused = cli("edition", "send", str(held))
    assert refused.exit_code == 1 and "needs an editor's approval" in refused.output
    assert cli("edition", "approve", str(held), "--by", "Ada").exit_code == 0
    sent = cli("edition", "send", str(held))
    assert sent.exit_code == 0, sent.output
    assert len(_received()) == 3
    # Once sending started, withdrawing is refused with the reason.
    late = cli("edition", "unapprove", str(held))
    assert late.exit_code == 1 and "only an approved draft" in late.output


def test_the_console_shows_the_hold_and_withdraws_an_approval(
    seeded: Session, settings: Settings, engine: Any, held: int, cli: Any
) -> None:
    from fastapi.testclient import TestClient

    from tests.test_console import _user, seen_of, sign_in

    _user(seeded, "ed@example.com", "editor")
    hold = f"<strong>waits for approval</strong> from {EDITOR}"
    with TestClient(
        create_app(settings, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as console:
        csrf = sign_in(console, "ed@example.com")
        page = console.get(f"/console/editions/{held}").text
        assert hold in page and "Withdraw approval" not in page
        done = console.post(
            f"/console/editions/{held}/approve",
            data={"csrf": csrf, "seen": seen_of(console, held)},
        )
        assert done.status_code == 303
        page = console.get(f"/console/editions/{held}").text
        assert hold not in page and "Withdraw approval" in page
        done = console.post(f"/console/editions/{held}/unapprove", data={"csrf": csrf})
        assert done.status_code == 303
        assert hold in console.get(f"/console/editions/{held}").text
    refused = cli("edition", "send", str(held))
    assert refused.exit_code == 1 and "needs an editor's approval" in refused.output


def test_an_approved_draft_is_not_refreshed(seeded: Session, settings: Settings, held: int) -> None:
    publish.approve_edition(seeded, edition_id=held, by="Ada", now=WEDNESDAY)
    before = [c.id for c in store.edition_comparisons(seeded, edition_id=held)]
    publish_daily(seeded, datetime(2026, 12, 3, tzinfo=UTC), 1)  # published after approval
    outcome = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=WEDNESDAY + timedelta(days=1)
    )
    assert outcome.edition.id == held and not outcome.created
    assert [c.id for c in store.edition_comparisons(seeded, edition_id=held)] == before


def test_a_draft_racing_for_the_same_period_reads_the_winner(
    seeded: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two schedulers drafting one period: the loser's insert hits the (newsletter, period)
    key and it gets the IntegrityError the scheduler handles by reading the winner's draft,
    not a misleading "comparison already in edition N" (found in review)."""
    at = datetime(2026, 11, 25, tzinfo=UTC)
    first = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at).edition
    real = store.find_edition
    calls = {"n": 0}

    def not_yet(*args: Any, **kwargs: Any) -> Edition | None:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(store, "find_edition", not_yet)
    monkeypatch.setattr(
        store, "comparison_ids_taken", _taken_after_first_call(store.comparison_ids_taken)
    )
    with pytest.raises(IntegrityError):
        publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at)
    seeded.rollback()
    assert [e.id for e in _editions(seeded)] == [first.id]
