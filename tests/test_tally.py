"""The delivery counters the database keeps (``deliverytally``, migration 0020) equal a count of
the delivery rows after every kind of change the engine makes, on SQLite and on PostgreSQL;
concurrent senders on PostgreSQL never wait on each other's counters; and an upgrade counts
the rows that were there before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text
from sqlmodel import Session

from newsletter import publish
from newsletter.audience.importing import import_comparisons
from newsletter.sending import ledger
from newsletter.sending.ledger import Outcome
from newsletter.storage import counters
from newsletter.storage.database import alembic_config, current_revision, make_engine, upgrade
from newsletter.storage.models import TROUBLE_PREDICATE, DeliveryStatus, Subscriber, Subscription

from .conftest import EXAMPLES, SECRET

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
WEEKS = (datetime(2026, 11, 18, 12, tzinfo=UTC), datetime(2026, 11, 25, 12, tzinfo=UTC))


def _editions(engine: Engine, subscribers: int) -> tuple[int, int, list[int]]:
    """Two started editions of the default newsletter with ``subscribers`` pending deliveries
    each: (first edition, second edition, the first one's delivery ids)."""
    from newsletter.config import Settings

    settings = Settings(
        database_url=str(engine.url.render_as_string(hide_password=False)),
        mail_backend="memory://",
        base_url="https://news.example.com",
        secret_key=SECRET,
        _env_file=None,
    )
    with Session(engine, expire_on_commit=False) as session:
        newsletter = publish.default_newsletter(session, settings)
        import_comparisons(session, path=EXAMPLES)
        people = [
            Subscriber(email=f"t{i}@example.com", email_key=f"t{i}@example.com")
            for i in range(subscribers)
        ]
        session.add_all(people)
        session.flush()
        session.add_all(
            Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0, status="active")
            for p in people
        )
        session.commit()
        editions = []
        for week in WEEKS:
            outcome = publish.draft_edition(
                session, settings=settings, newsletter_slug=None, at=week, now=week
            )
            edition_id = outcome.edition.id or 0
            ledger.open_deliveries(session, edition_id=edition_id, newsletter_id=newsletter.id or 0)
            editions.append(edition_id)
        session.commit()
        ids = list(
            session.execute(
                text("SELECT id FROM delivery WHERE edition_id = :e ORDER BY id"),
                {"e": editions[0]},
            ).scalars()
        )
        return editions[0], editions[1], ids


def _counted(session: Session) -> dict[int, dict[str, int]]:
    """What a count of the rows says: edition -> state -> rows."""
    found: dict[int, dict[str, int]] = {}
    for edition_id, status, n in session.execute(
        text("SELECT edition_id, status, count(*) FROM delivery GROUP BY edition_id, status")
    ):
        found.setdefault(edition_id, {})[status] = n
    return found


def _agree(session: Session, editions: list[int]) -> dict[int, dict[str, int]]:
    session.commit()
    counted = _counted(session)
    assert counters.tallies(session, editions) == counted
    return counted


def _claim(session: Session, edition_id: int, owner: str, limit: int, now: datetime) -> list[int]:
    claimed = ledger.claim_batch(
        session,
        edition_id=edition_id,
        newsletter_id=1,
        after_id=0,
        limit=limit,
        owner=owner,
        lease_seconds=300,
        now=now,
    )
    return [d.id for d in claimed]


def test_the_counters_equal_a_count_of_the_rows_after_every_kind_of_change(
    both_engine: Engine,
) -> None:
    engine = both_engine
    first, second, ids = _editions(engine, 30)
    editions = [first, second]
    with Session(engine, expire_on_commit=False) as session:
        assert _agree(session, editions) == {first: {"pending": 30}, second: {"pending": 30}}

        claimed = _claim(session, first, "a", 10, NOW)
        assert len(claimed) == 10
        assert _agree(session, editions)[first] == {"pending": 20, "claimed": 10}

        answers = [
            DeliveryStatus.sent,
            DeliveryStatus.sent,
            DeliveryStatus.sent,
            DeliveryStatus.sent,
            DeliveryStatus.failed,
            DeliveryStatus.failed,
            DeliveryStatus.deferred,
            DeliveryStatus.deferred,
            DeliveryStatus.unknown,
            DeliveryStatus.queued,
        ]
        outcomes = [
            Outcome(
                i,
                status,
                code=550 if status == "failed" else None,
                detail=f"no such user {i}" if status == "failed" else None,
                retry_at=NOW + timedelta(hours=1) if status == "deferred" else None,
            )
            for i, status in zip(claimed, answers, strict=True)
        ]
        assert ledger.record(session, outcomes=outcomes, owner="a", now=NOW) == 10
        assert _agree(session, editions)[first] == {
            "pending": 20,
            "sent": 4,
            "failed": 2,
            "deferred": 2,
            "unknown": 1,
            "queued": 1,
        }

        # The send page: the rate over the minute before now (the 5 accepted, by their
        # recorded time), and the latest troubles.
        page = ledger.progress(session, edition_id=first, now=NOW + timedelta(seconds=30))
        assert page.sent_last_minute == 5
        assert sorted(e[2] for e in page.recent_errors) == [
            f"no such user {claimed[4]}",
            f"no such user {claimed[5]}",
        ]
        later = NOW + timedelta(minutes=2)
        assert ledger.progress(session, edition_id=first, now=later).sent_last_minute == 0
        # A recorded answer from a sender that lost its claim changes nothing.
        assert ledger.record(session, outcomes=outcomes[:2], owner="a", now=NOW) == 0
        more = _claim(session, first, "b", 9, NOW)
        ledger.release(session, ids=more[:3], owner="b")
        ledger.postpone(
            session,
            until={i: NOW + timedelta(minutes=5) for i in more[3:6]},
            owner="b",
            reason="cap",
        )
        # A renewal moves no state.
        assert ledger.renew(session, ids=more[6:], owner="b", now=NOW, lease_seconds=600) == set(
            more[6:]
        )
        assert _agree(session, editions)[first]["claimed"] == 3

        # A rolled-back change leaves the counters as they were.
        session.execute(
            text("UPDATE delivery SET status = 'sent' WHERE edition_id = :e"), {"e": first}
        )
        session.rollback()
        assert _agree(session, editions)[first]["sent"] == 4

        assert ledger.retry_failed(session, edition_id=first, include_unknown=True) == 3
        # Deleted rows (what pruning and erasure do) are taken away.
        session.execute(
            text("DELETE FROM delivery WHERE id IN (:a, :b)"), {"a": ids[0], "b": ids[-1]}
        )
        # A change of edition, which the engine never makes, is still counted right.
        session.execute(
            text(
                "DELETE FROM delivery WHERE edition_id = :s AND subscriber_id = "
                "(SELECT subscriber_id FROM delivery WHERE id = :i)"
            ),
            {"s": second, "i": ids[1]},
        )
        session.execute(
            text("UPDATE delivery SET edition_id = :s WHERE id = :i"), {"s": second, "i": ids[1]}
        )
        counted = _agree(session, editions)
        assert sum(counted[first].values()) == 27 and sum(counted[second].values()) == 30
        assert ledger.counts(session, edition_id=second, pruned=False)["pending"] == 29
        # A finished edition keeps its counts, not a row per second of its send rate.
        ledger.settle(session, edition_id=first, counts=counted[first], now=NOW)
        session.commit()
        assert ledger.progress(session, edition_id=first, now=NOW).sent_last_minute == 0


def test_the_send_page_reads_the_troubled_rows_through_their_partial_index(
    postgres_url: str,
) -> None:
    """Five troubled rows among many are found through ``ix_delivery_trouble``, not by
    reading the edition (300 ms at 52M delivery rows)."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        first, _, ids = _editions(engine, 200)
        with Session(engine) as session:
            session.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(
                session.execute(
                    text(
                        f"EXPLAIN SELECT id FROM delivery AS d WHERE d.edition_id = :e "
                        f"AND d.{TROUBLE_PREDICATE} AND d.error_text IS NOT NULL "
                        "ORDER BY d.updated_at DESC, d.id DESC LIMIT 5"
                    ),
                    {"e": first},
                ).scalars()
            )
        assert "ix_delivery_trouble" in plan, plan
    finally:
        engine.dispose()


def test_concurrent_senders_never_wait_on_each_others_counters(postgres_url: str) -> None:
    """Each PostgreSQL backend writes its own counter rows: a claim while another sender's
    claim is uncommitted goes through at once (with one shared row it would wait for it)."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        first, second, ids = _editions(engine, 20)
        with engine.connect() as one, engine.connect() as two:
            one.execute(
                text("UPDATE delivery SET status = 'claimed' WHERE id = ANY(:ids)"),
                {"ids": ids[:5]},
            )  # left uncommitted
            two.execute(text("SET lock_timeout = '2s'"))
            two.execute(
                text("UPDATE delivery SET status = 'claimed' WHERE id = ANY(:ids)"),
                {"ids": ids[5:10]},
            )
            two.commit()
            one.commit()
        with Session(engine) as session:
            assert _agree(session, [first, second])[first] == {"pending": 10, "claimed": 10}
            shards = session.execute(
                text("SELECT count(DISTINCT shard) FROM deliverytally WHERE status = 'claimed'")
            ).scalar()
            assert shards == 2
    finally:
        engine.dispose()


def test_an_upgrade_counts_the_rows_already_there(both_engine: Engine) -> None:
    engine = both_engine
    from alembic import command

    first, second, ids = _editions(engine, 12)
    with Session(engine) as session:
        _claim(session, first, "a", 5, NOW)
    command.downgrade(alembic_config(engine), "0019")
    with engine.begin() as conn:
        conn.execute(text("UPDATE delivery SET status = 'sent' WHERE id = :i"), {"i": ids[0]})
        conn.execute(text("DELETE FROM delivery WHERE id = :i"), {"i": ids[1]})
    upgrade(engine)
    with Session(engine) as session:
        assert _agree(session, [first, second]) == {
            first: {"sent": 1, "claimed": 3, "pending": 7},
            second: {"pending": 12},
        }
        # And the triggers are back.
        _claim(session, second, "b", 4, NOW)
        assert _agree(session, [first, second])[second] == {"pending": 8, "claimed": 4}


def test_dropping_deliverys_foreign_keys_keeps_its_rows_indexes_and_triggers(
    both_engine: Engine,
) -> None:
    """Migration 0022 removes delivery's two foreign keys (on SQLite by editing the table's
    definition, not by rebuilding it); going down puts them back. Rows, indexes and the
    counters' triggers stay as they were both ways."""
    from alembic import command
    from sqlalchemy import inspect

    engine = both_engine
    first, second, _ = _editions(engine, 6)

    def shape() -> tuple[set[str], set[str]]:
        found = inspect(engine)
        keys = {k["referred_table"] for k in found.get_foreign_keys("delivery")}
        return keys, {i["name"] or "" for i in found.get_indexes("delivery")}

    keys, indexes = shape()
    assert keys == set() and "ix_delivery_edition_keyset" in indexes
    command.downgrade(alembic_config(engine), "0021")
    assert shape() == ({"edition", "subscriber"}, indexes)
    with Session(engine) as session:
        _claim(session, first, "a", 2, NOW)
        assert _agree(session, [first, second])[first] == {"pending": 4, "claimed": 2}
    upgrade(engine)
    assert shape() == (set(), indexes)
    with Session(engine) as session:
        _claim(session, second, "b", 3, NOW)
        assert _agree(session, [first, second]) == {
            first: {"pending": 4, "claimed": 2},
            second: {"pending": 3, "claimed": 3},
        }
        if engine.dialect.name == "sqlite":
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_a_hand_edited_delivery_definition_stops_0022_with_one_line(tmp_path: Path) -> None:
    """A delivery table whose stored definition has a foreign key 0022 does not know (edited
    by hand) stops `db upgrade` with one line naming the table, no traceback, and the schema
    left at 0021, its definition as it was."""
    import os

    from alembic import command

    from .test_cli import run

    url = f"sqlite:///{tmp_path / 'edited.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        command.downgrade(alembic_config(engine), "0021")
        with engine.begin() as conn:
            (sql,) = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'delivery'"
            ).one()
            at = sql.rindex(")")
            edited = sql[:at] + ", FOREIGN KEY(edition_id) REFERENCES newsletter (id)" + sql[at:]
            (version,) = conn.exec_driver_sql("PRAGMA schema_version").one()
            conn.exec_driver_sql("PRAGMA writable_schema = ON")
            conn.exec_driver_sql(
                "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = 'delivery'",
                (edited,),
            )
            conn.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
            conn.exec_driver_sql("PRAGMA writable_schema = OFF")
        engine.dispose()

        environ = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        environ.update(NEWSLETTER_DATABASE_URL=url, COLUMNS="200")
        result = run(["db", "upgrade"], environ, tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "table delivery: its definition has a foreign key" in result.stderr
        assert "nothing was changed" in result.stderr
        assert current_revision(engine) == "0021"
        with engine.connect() as conn:
            (after,) = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'delivery'"
            ).one()
        assert after == edited
    finally:
        engine.dispose()
