"""Bulk writes leave the planner's statistics fresh (issue 16): right after `import
subscribers` and the audience fix, PostgreSQL plans from real row counts, not from the empty
tables autovacuum last saw (a 50,000-row import then a send: 78-96 s of planner-starved CPU
before the first message; with the statistics, under 2 s; see bench/first_message.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session
from typer.testing import CliRunner

from newsletter import importing, publish
from newsletter.cli import app
from newsletter.config import Settings
from newsletter.database import make_engine, upgrade
from newsletter.planner import refresh_statistics
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
