"""Bulk writes leave the planner's statistics fresh (issue 16): right after `import
subscribers` and the audience fix, PostgreSQL plans from real row counts, not from the empty
tables autovacuum last saw (a 50,000-row import then a send: 78-96 s of planner-starved CPU
before the first message; with the statistics, under 2 s; see bench/first_message.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session
from typer.testing import CliRunner

from newsletter import publish
from newsletter.audience import importing
from newsletter.cli import app
from newsletter.config import Settings
from newsletter.sending import ledger
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.planner import refresh_statistics
from tests.conftest import EXAMPLES, SECRET

ROWS = 5_000


def _rows(session: Session, table: str) -> float:
    """The planner's row estimate for ``table``: what ANALYZE last counted (-1: never, on
    PostgreSQL 14 and later). Set in pg_class by ANALYZE itself, in its transaction."""
    return float(
        session.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table}
        ).scalar_one()
    )


def test_an_import_and_a_start_leave_postgresql_with_statistics(
    postgres_url: str, settings: Settings, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    csv = tmp_path / "list.csv"
    csv.write_text("email\n" + "".join(f"s{i}@example.org\n" for i in range(ROWS)))
    env = {
        "NEWSLETTER_DATABASE_URL": postgres_url,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_MAIL_BACKEND": "memory://",
    }
    try:
        with Session(engine) as session:
            # Autovacuum off for these tables: whatever statistics they get, the engine took.
            for table in ("subscriber", "subscription", "delivery"):
                session.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)"))
            session.commit()
            assert _rows(session, "subscription") == -1  # a fresh table: never analyzed
        result = CliRunner().invoke(app, ["import", "subscribers", str(csv)], env=env)
        assert result.exit_code == 0, result.output
        with Session(engine) as session:
            for table in ("subscriber", "subscription"):
                assert _rows(session, table) == pytest.approx(ROWS, rel=0.05), table
            pg = settings.model_copy(update={"database_url": postgres_url})
            importing.import_comparisons(session, path=EXAMPLES)
            session.commit()
            draft = publish.draft_edition(
                session, settings=pg, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
            ).edition.id
            assert draft is not None
            assert _rows(session, "delivery") == -1
            added = publish.start_edition(
                session, edition_id=draft, settings=pg, now=datetime(2026, 11, 25, 9, tzinfo=UTC)
            )
            assert added == ROWS
            assert _rows(session, "delivery") == pytest.approx(ROWS, rel=0.05)
    finally:
        engine.dispose()


def test_only_the_known_tables_can_be_named(session: Session) -> None:
    with pytest.raises(ValueError, match="not an analyzable table"):
        refresh_statistics(session, ("subscriber; DROP TABLE x",))
    refresh_statistics(session, ("subscriber",))  # SQLite: PRAGMA optimize, no error


def _statements(engine: Engine, call: Callable[[], object]) -> list[tuple[str, Any]]:
    """What ``call`` sent to the database, in order."""
    sent: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def test_a_claim_walks_the_new_editions_ids_in_order_whatever_the_statistics_say(
    postgres_url: str, settings: Settings
) -> None:
    """The planner multiplies "this edition", "past this id" and "open" as if independent and
    expects a handful of rows where every remaining row of a new edition qualifies; for so few
    it chose a bitmap scan of all of them and a sort (406 ms a claim at 52M delivery rows
    instead of 0.4). The claim, replayed as it was sent, must plan the ordered index walk."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    try:
        with Session(engine) as session:
            pg = settings.model_copy(update={"database_url": postgres_url})
            newsletter = publish.default_newsletter(session, pg).id
            session.execute(text("ALTER TABLE delivery SET (autovacuum_enabled = off)"))
            session.execute(
                text(
                    "INSERT INTO subscriber (email, email_key, created_at, soft_bounces, "
                    "confirm_count) SELECT 's' || g || '@example.org', 's' || g || "
                    "'@example.org', :t, 0, 0 FROM generate_series(1, 4000) AS g"
                ),
                {"t": now},
            )
            session.execute(
                text(
                    "INSERT INTO edition (newsletter_id, period_key, period_start, period_end, "
                    "status, subject, preheader, more_count, created_at) "
                    "SELECT :n, 'e' || g, :t, :t, 'sent', 'E', '', 0, :t "
                    "FROM generate_series(1, 31) AS g"
                ),
                {"n": newsletter, "t": now},
            )
            editions = list(session.execute(text("SELECT id FROM edition ORDER BY id")).scalars())
            old, new = editions[:-1], editions[-1]
            session.execute(
                text(
                    "INSERT INTO delivery (edition_id, subscriber_id, status, attempts, "
                    "updated_at) SELECT e, s.id, 'sent', 1, :t "
                    "FROM unnest(CAST(:old AS integer[])) AS e, subscriber AS s"
                ),
                {"old": old, "t": now},
            )
            session.commit()
            refresh_statistics(session, ("delivery",))  # statistics from before the new edition
            session.execute(
                text(
                    "INSERT INTO delivery (edition_id, subscriber_id, status, attempts, "
                    "updated_at) SELECT :e, id, 'pending', 0, :t FROM subscriber ORDER BY id"
                ),
                {"e": new, "t": now},
            )
            session.execute(text("UPDATE edition SET status = 'sending' WHERE id = :e"), {"e": new})
            session.commit()
            first = session.execute(
                text("SELECT min(id) FROM delivery WHERE edition_id = :e"), {"e": new}
            ).scalar_one()

            def claim() -> object:
                return ledger.claim_batch(
                    session,
                    edition_id=new,
                    newsletter_id=newsletter or 0,
                    after_id=first + 100,
                    limit=500,
                    owner="test",
                    lease_seconds=300,
                    now=now,
                )

            sent = _statements(engine, claim)
        claim_sql = [(s, p) for s, p in sent if s.lstrip().upper().startswith("UPDATE")]
        assert len(claim_sql) == 1
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters in sent:  # the same session settings, then the claim
                if statement.lstrip().upper().startswith("UPDATE"):
                    cursor.execute("EXPLAIN " + statement, parameters)
                    plan = "\n".join(line for (line,) in cursor.fetchall())
                    break
                cursor.execute(statement, parameters)
            raw.rollback()
        finally:
            raw.close()
        assert "Index Scan using ix_delivery_edition_keyset" in plan, plan
        assert "Bitmap" not in plan and "Sort" not in plan, plan
    finally:
        engine.dispose()


def test_a_claim_on_sqlite_walks_the_keyset_index_without_a_sort(settings: Settings) -> None:
    """The same situation on SQLite (statistics from before the new edition): its planner
    takes the edition's ids in index order and stops at the limit, with no temporary b-tree."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    stamp = "2026-12-01 00:00:00.000000"
    try:
        with Session(engine) as session:
            newsletter = publish.default_newsletter(session, settings).id
            session.execute(
                text(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                    "WHERE n < 4000) INSERT INTO subscriber (email, email_key, created_at, "
                    "soft_bounces, confirm_count) SELECT 's' || n || '@example.org', "
                    "'s' || n || '@example.org', :t, 0, 0 FROM g"
                ),
                {"t": stamp},
            )
            session.execute(
                text(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 31) "
                    "INSERT INTO edition (newsletter_id, period_key, period_start, period_end, "
                    "status, subject, preheader, more_count, created_at) "
                    "SELECT :n, 'e' || n, :t, :t, 'sent', 'E', '', 0, :t FROM g"
                ),
                {"n": newsletter, "t": stamp},
            )
            new = session.execute(text("SELECT max(id) FROM edition")).scalar_one()
            session.execute(
                text(
                    "INSERT INTO delivery (edition_id, subscriber_id, status, attempts, "
                    "updated_at) SELECT e.id, s.id, 'sent', 1, :t FROM edition AS e, "
                    "subscriber AS s WHERE e.id < :new"
                ),
                {"t": stamp, "new": new},
            )
            session.commit()
            session.execute(text("ANALYZE"))
            session.execute(
                text(
                    "INSERT INTO delivery (edition_id, subscriber_id, status, attempts, "
                    "updated_at) SELECT :new, id, 'pending', 0, :t FROM subscriber"
                ),
                {"t": stamp, "new": new},
            )
            session.commit()
            sent = _statements(
                engine,
                lambda: ledger.claim_batch(
                    session,
                    edition_id=new,
                    newsletter_id=newsletter or 0,
                    after_id=0,
                    limit=500,
                    owner="test",
                    lease_seconds=300,
                    now=datetime(2026, 12, 1, 9, tzinfo=UTC),
                ),
            )
        ((statement, parameters),) = [
            (s, p) for s, p in sent if s.lstrip().upper().startswith("UPDATE")
        ]
        raw = engine.raw_connection()
        try:
            plan = [
                row[3]
                for row in raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
        finally:
            raw.close()
        assert any("ix_delivery_edition_keyset (edition_id=? AND id>?)" in p for p in plan), plan
        assert not any("TEMP B-TREE" in p for p in plan), plan
    finally:
        engine.dispose()
