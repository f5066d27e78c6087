"""Migrations: empty -> head on SQLite and PostgreSQL, and the models match the migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import newsletter.storage.models  # noqa: F401
from newsletter.storage.database import (
    SchemaOutOfDate,
    current_revision,
    head_revision,
    make_engine,
    require_head,
    upgrade,
)

TABLES = {
    "newsletter",
    "comparison",
    "tool",
    "review",
    "subscriber",
    "subscription",
    "edition",
    "editionitem",
    "delivery",
    "subscriptionevent",
}


def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        with pytest.raises(SchemaOutOfDate, match="newsletter db upgrade"):
            require_head(engine)
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision(engine)
        require_head(engine)
        assert TABLES <= set(inspect(engine).get_table_names())
        uniques = {
            tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("delivery")
        }
        assert ("edition_id", "subscriber_id") in uniques
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
        upgrade(engine)  # running it again is a no-op
        assert current_revision(engine) == head_revision(engine)
    finally:
        engine.dispose()


def test_upgrade_empty_sqlite_to_head(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_upgrade_empty_postgresql_to_head(postgres_url: str) -> None:
    _check(postgres_url)


def test_the_schema_head_constant_is_alembics_head(tmp_path: Path) -> None:
    """Commands compare the database with ``SCHEMA_HEAD`` instead of loading Alembic: a new
    migration must move the constant, and a database one behind is refused."""
    from sqlalchemy import text

    from newsletter.storage import database

    engine = database.make_engine(f"sqlite:///{tmp_path / 'head.db'}")
    try:
        assert database.head_revision(engine) == database.SCHEMA_HEAD
        assert database.current_revision(engine) is None
        database.upgrade(engine)
        assert database.current_revision(engine) == database.SCHEMA_HEAD
        database.require_head(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0018'"))
        with pytest.raises(database.SchemaOutOfDate, match="at revision 0018, code expects"):
            database.require_head(engine)
    finally:
        engine.dispose()


#: Foreign keys whose referencing column has no index of its own, each with the reason.
UNINDEXED_KEYS_ALLOWED = {
    # Newsletters are never deleted, so nothing ever looks up events by their newsletter
    # to check the key.
    ("subscriptionevent", "newsletter_id"): "newsletters are never deleted",
}


def test_every_foreign_key_is_indexed_on_its_referencing_column() -> None:
    """Deleting a referenced row makes the database look for rows still pointing at it: without
    an index on the referencing column that is a scan of the whole table per deleted row. A
    prune deleting a million deliveries scanned every provider report each time
    (``mailevent.delivery_id`` had no index: hours; migration 0023)."""
    missing = []
    for table in SQLModel.metadata.sorted_tables:
        leading = {idx.columns[0].name for idx in table.indexes if len(idx.columns)}
        leading |= {
            constraint.columns[0].name
            for constraint in table.constraints
            if isinstance(constraint, sa.PrimaryKeyConstraint | sa.UniqueConstraint)
            and len(constraint.columns)
        }
        for key in table.foreign_key_constraints:
            column = key.columns[0].name
            if column not in leading and (table.name, column) not in UNINDEXED_KEYS_ALLOWED:
                missing.append(f"{table.name}.{column} -> {key.referred_table.name}")
    assert missing == [], f"foreign keys without an index on their column: {missing}"
