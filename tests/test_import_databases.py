"""The subscriber import gives the same report and the same rows on SQLite (executemany) and
on PostgreSQL (COPY, ``= ANY`` lookups): new people, changed names and zones, two lists, an
unsubscribed person kept so, a bounced one and an erased one never re-added."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from newsletter import publish
from newsletter.audience import importing, privacy
from newsletter.config import Settings
from newsletter.storage import bulk, store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Newsletter, Subscriber, Subscription, SubscriptionEvent
from tests.conftest import IMPORTED_AT

FIRST = (
    "email,name,timezone,newsletters\n"
    "ana@example.com,Ana,Europe/Berlin,\n"
    "bob@example.com,,,weekly-ai-tool-verdicts tool-deals\n"
    "cy@example.com,Cy,,\n"
    "dee@example.com,Dee,,\n"
    "eve@example.com,Eve,,\n"
)
SECOND = (
    "email,name,timezone,newsletters\n"
    "ANA@example.com,Ana Lee,,\n"  # known: a new name, zone kept
    "bob@example.com,Bob,America/New_York,tool-deals\n"  # known: name and zone
    "cy@example.com,,,\n"  # unsubscribed: stays so
    "dee@example.com,Dee Two,,\n"  # bounced: its name follows, never re-added
    "eve@example.com,Eve Again,,\n"  # erased: nothing of theirs comes back
    "fay@example.com,Fay,,tool-deals\n"  # new
    "not-an-address,X,,\n"  # rejected
)


def _tool_deals(session: Session) -> Newsletter:
    """The second list the files name."""
    return store.ensure_newsletter(
        session,
        slug="tool-deals",
        name="Tool Deals",
        timezone="UTC",
        site_url="https://aitoolverdicts.example",
        item_cap=8,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_of(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Engine]:
    url = (
        settings.database_url
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("chunk", [importing.IMPORT_CHUNK, 2], ids=["one-chunk", "chunks-of-2"])
def test_the_same_import_on_sqlite_and_postgresql(
    engine_of: Engine,
    settings: Settings,
    tmp_path: Path,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of two lines: known and new people, duplicates and lists fall across chunks.
    monkeypatch.setattr(importing, "IMPORT_CHUNK", chunk)
    progress: list[tuple[int, int]] = []
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(FIRST, encoding="utf-8")
    second.write_text(SECOND, encoding="utf-8")
    with Session(engine_of, expire_on_commit=False) as session:
        main = publish.default_newsletter(session, settings)
        deals = _tool_deals(session)
        session.commit()
        one = importing.import_subscribers(
            session, now=IMPORTED_AT, path=first, default_newsletter=main.slug
        )
        session.commit()
        assert (one.created, one.subscribed, one.updated, one.rejected) == (5, 6, 0, [])
        people = {s.email: s for s in session.exec(select(Subscriber))}
        store.set_subscription_status(
            session,
            subscriber_id=people["cy@example.com"].id or 0,
            newsletter_id=main.id or 0,
            status="unsubscribed",
            source="page",
        )
        people["dee@example.com"].suppressed = "bounced"
        session.commit()
        privacy.erase(
            session,
            subscriber_id=people["eve@example.com"].id or 0,
            now=datetime(2026, 11, 25, tzinfo=UTC),
            source="operator",
        )
        session.commit()

        two = importing.import_subscribers(
            session,
            now=IMPORTED_AT,
            path=second,
            default_newsletter=main.slug,
            on_progress=lambda done, total: progress.append((done, total)),
        )
        session.commit()
        # Seven lines: a call per full chunk, then the end.
        assert progress[-1] == (7, 7) and len(progress) == (1 if chunk > 7 else 4)
        assert [d for d, _ in progress] == sorted(d for d, _ in progress)
        # Updated: Ana, Bob and Dee (a suppressed person's name still follows the file); new
        # on a list: only Fay (Bob was on both already).
        assert (two.created, two.updated, two.subscribed) == (1, 3, 1)
        assert (two.kept_unsubscribed, two.suppressed) == (1, 2)
        assert [r.split(":")[0] for r in two.rejected] == ["line 8 (not-an-address)"]

        session.expire_all()
        rows = {
            s.email: (s.name, s.timezone, s.suppressed) for s in session.exec(select(Subscriber))
        }
        assert rows["ana@example.com"] == ("Ana Lee", "Europe/Berlin", None)
        assert rows["bob@example.com"] == ("Bob", "America/New_York", None)
        assert rows["dee@example.com"] == ("Dee Two", None, "bounced")
        assert rows["fay@example.com"] == ("Fay", None, None)
        assert "eve@example.com" not in rows  # erased stays erased
        subs = {
            (s.subscriber_id, s.newsletter_id): s.status for s in session.exec(select(Subscription))
        }
        ids = {email: s.id for email, s in people.items()}
        fay = session.exec(select(Subscriber).where(Subscriber.email == "fay@example.com")).one()
        assert subs[(ids["cy@example.com"] or 0, main.id or 0)] == "unsubscribed"
        assert subs[(ids["bob@example.com"] or 0, deals.id or 0)] == "active"
        assert subs[(fay.id or 0, deals.id or 0)] == "active"
        assert (fay.id, main.id) not in subs
        imported = session.exec(
            select(SubscriptionEvent).where(SubscriptionEvent.source == "import")
        ).all()
        assert len(imported) == 7  # six from the first file, Fay's from the second
        assert {e.detail for e in imported if e.subscriber_id == fay.id} == {"second.csv line 7"}


def test_an_export_imports_back_as_the_same_list(
    engine_of: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export streams pages of people (here two at a time): only who may be mailed, with the
    lists they are active on; importing the file into an empty store gives the same list."""
    import io

    from newsletter.audience import exporting

    monkeypatch.setattr(exporting, "PAGE", 2)
    first = tmp_path / "first.csv"
    first.write_text(FIRST, encoding="utf-8")
    with Session(engine_of, expire_on_commit=False) as session:
        main = publish.default_newsletter(session, settings)
        _tool_deals(session)
        session.commit()
        importing.import_subscribers(
            session, now=IMPORTED_AT, path=first, default_newsletter=main.slug
        )
        people = {s.email: s for s in session.exec(select(Subscriber))}
        people["dee@example.com"].suppressed = "bounced"
        store.set_subscription_status(
            session,
            subscriber_id=people["cy@example.com"].id or 0,
            newsletter_id=main.id or 0,
            status="unsubscribed",
            source="page",
        )
        session.commit()
        out = io.StringIO()
        count = exporting.export_subscribers(session, out)
        deals = io.StringIO()
        exporting.export_subscribers(session, deals, newsletter="tool-deals")
    assert out.getvalue() == (
        "email,name,timezone,newsletters\n"
        "ana@example.com,Ana,Europe/Berlin,weekly-ai-tool-verdicts\n"
        "bob@example.com,,,tool-deals weekly-ai-tool-verdicts\n"
        "eve@example.com,Eve,,weekly-ai-tool-verdicts\n"
    )
    assert count == 3
    assert deals.getvalue().splitlines()[1:] == ["bob@example.com,,,tool-deals"]
    # Into an empty SQLite store: the same people on the same lists.
    again = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'again.db'}"})
    engine = make_engine(again.database_url)
    upgrade(engine)
    exported = tmp_path / "exported.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    try:
        with Session(engine) as session:
            publish.default_newsletter(session, again)
            _tool_deals(session)
            session.commit()
            report = importing.import_subscribers(
                session, now=IMPORTED_AT, path=exported, default_newsletter=main.slug
            )
            session.commit()
            assert (report.created, report.subscribed, report.rejected) == (3, 4, [])
            again_out = io.StringIO()
            exporting.export_subscribers(session, again_out)
        assert again_out.getvalue() == out.getvalue()
    finally:
        engine.dispose()


def test_the_export_command(settings: Settings, tmp_path: Path, engine: Engine) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    first = tmp_path / "first.csv"
    first.write_text(FIRST, encoding="utf-8")
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url}
    runner = CliRunner()
    assert runner.invoke(app, ["import", "subscribers", str(first)], env=env).exit_code == 0
    out = tmp_path / "list.csv"
    result = runner.invoke(app, ["subscribers", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    # Bob's line named a list this store does not have: rejected, so four people.
    assert "4 subscribers exported" in result.output
    assert out.read_text().splitlines()[0] == "email,name,timezone,newsletters"
    assert len(out.read_text().splitlines()) == 5
    unknown = runner.invoke(app, ["subscribers", "export", "--newsletter", "nope"], env=env)
    assert unknown.exit_code == 1
    assert unknown.output == "error: newsletter 'nope' does not exist\n"


def test_the_lookups_find_every_key_however_it_is_sent(engine_of: Engine) -> None:
    """The bulk lookups send their keys as one joined string on PostgreSQL; a key that holds
    the separator itself goes as an array instead, and both find exactly what is stored."""
    now = datetime(2026, 12, 4, tzinfo=UTC)
    odd = "line\nbreak@example.com"  # never a valid address, but the lookup must not split it
    keys = [f"reader{i}@example.org" for i in range(2_500)]  # more than one lookup's worth
    with Session(engine_of) as session:
        ids = bulk.insert_subscribers(
            session, rows=[(k, k, None, None) for k in [*keys, odd]], now=now
        )
        assert len(ids) == 2_501
        wanted = [*keys[::2], "nobody@example.org"]
        assert set(bulk.find_subscribers(session, keys=wanted)) == set(keys[::2])
        with_breaks = [odd, keys[1], f"{keys[3]}\n"]
        assert set(bulk.find_subscribers(session, keys=with_breaks)) == {odd, keys[1]}
        assert bulk.find_subscribers(session, keys=[]) == {}
        assert bulk.find_subscriptions(session, subscriber_ids=list(ids.values())) == {}


def test_an_imported_time_is_stored_as_the_orm_stores_it(
    engine_of: Engine, settings: Settings, tmp_path: Path
) -> None:
    """The import writes plain rows, not ORM objects; its timestamps must still be stored in
    the same form, or a comparison in SQL sorts them apart (on SQLite, a whole second written
    by the driver's own converter had no ".000000": earlier than the ORM's same moment)."""
    moment = datetime(2026, 12, 4, 6, 30, tzinfo=UTC)  # a whole second, the telling case
    listed = tmp_path / "list.csv"
    listed.write_text("email\nimported@example.com\n", encoding="utf-8")
    with Session(engine_of, expire_on_commit=False) as session:
        main = publish.default_newsletter(session, settings)
        session.add(
            Subscriber(email="orm@example.com", email_key="orm@example.com", created_at=moment)
        )
        session.commit()
        importing.import_subscribers(session, path=listed, default_newsletter=main.slug, now=moment)
        session.commit()
        stored = session.execute(
            text("SELECT email, CAST(created_at AS TEXT) FROM subscriber ORDER BY email")
        ).all()
        assert stored[0][1] == stored[1][1], stored
        later = session.execute(
            text(
                "SELECT COUNT(*) FROM subscriber WHERE created_at >= "
                "(SELECT created_at FROM subscriber WHERE email = 'orm@example.com')"
            )
        ).scalar_one()
        assert later == 2
        for table in ("subscription", "subscriptionevent"):
            written = session.execute(
                text(f"SELECT CAST(created_at AS TEXT) FROM {table}")
            ).scalar_one()
            assert written == stored[0][1], (table, written)
