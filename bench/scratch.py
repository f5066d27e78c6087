"""What the PostgreSQL benchmarks share: a scratch database, and an edition copied into a
newsletter of its own (a comparison goes out once per newsletter, and the examples fill one
week, so a second edition with the same items needs a second newsletter)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import create_engine, literal, select, text
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.config import Settings
from newsletter.paths import example_comparisons
from newsletter.storage import store
from newsletter.storage.models import Edition, EditionItem
from newsletter.storage.planner import refresh_statistics

ADMIN = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def load_audience(session: Session, settings: Settings, count: int, at: datetime) -> int:
    """``count`` subscribers (r1@example.com ...), all active on the default newsletter, and
    the example comparisons, loaded by SQL and analyzed; returns the newsletter's id."""
    session.execute(
        text(
            "INSERT INTO subscriber (email, email_key, created_at, soft_bounces, confirm_count) "
            "SELECT 'r' || g || '@example.com', 'r' || g || '@example.com', :t, 0, 0 "
            "FROM generate_series(1, :n) AS g"
        ),
        {"t": at, "n": count},
    )
    default = publish.default_newsletter(session, settings)
    session.execute(
        text(
            "INSERT INTO subscription (subscriber_id, newsletter_id, status, created_at, "
            "updated_at) SELECT id, :n, 'active', :t, :t FROM subscriber"
        ),
        {"n": default.id, "t": at},
    )
    importing.import_comparisons(session, path=example_comparisons())
    session.commit()
    refresh_statistics(session, ("subscriber", "subscription"))
    return default.id or 0


@contextmanager
def scratch_postgres(prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new database on the local server, dropped afterwards unless ``keep``; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def copy_edition(session: Session, template: int, slug: str) -> tuple[int, int]:
    """A draft with ``template``'s items in a new newsletter ``slug`` whose subscriptions are
    the template newsletter's; returns (edition id, newsletter id). The caller commits."""
    edition = session.get(Edition, template)
    assert edition is not None
    newsletter = store.ensure_newsletter(
        session,
        slug=slug,
        name=slug,
        timezone="UTC",
        site_url="https://aitoolverdicts.example",
        item_cap=8,
    )
    copy = Edition(
        **edition.model_dump(
            exclude={"id", "status", "newsletter_id", "period_key", "send_started_at", "sent_at"}
        )
    )
    copy.newsletter_id, copy.period_key = newsletter.id or 0, f"{slug}-copy"
    session.add(copy)
    session.flush()
    session.execute(
        text(
            """
            INSERT INTO subscription (subscriber_id, newsletter_id, status, created_at,
                                      updated_at)
            SELECT subscriber_id, :other, status, created_at, updated_at
            FROM subscription WHERE newsletter_id = :first
            """
        ),
        {"other": newsletter.id, "first": edition.newsletter_id},
    )
    items = EditionItem.__table__  # type: ignore[attr-defined]
    names = [c.name for c in items.columns if c.name not in ("id", "edition_id", "newsletter_id")]
    session.execute(
        items.insert().from_select(
            ["edition_id", "newsletter_id", *names],
            select(literal(copy.id), literal(newsletter.id), *[items.c[n] for n in names]).where(
                items.c.edition_id == template
            ),
        )
    )
    return copy.id or 0, newsletter.id or 0
