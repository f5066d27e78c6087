"""The report counters the database keeps (``editionreport``, migration 0021) equal the people
counted from the events (each person once per edition and kind), on SQLite and PostgreSQL;
two reports about one person at once count once; a statement of any size takes at most 256
locks (migration 0024); an upgrade counts the events already there."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlmodel import Session

from newsletter.storage import counters
from newsletter.storage.database import alembic_config, current_revision, make_engine, upgrade

from .test_tally import _editions

BOUNCES = ("bounced_hard", "bounced_soft")


def _people(engine: Engine) -> dict[int, dict[str, int]]:
    """What counting the events says, each person once: the reference."""
    seen: dict[tuple[int, str], set[int]] = defaultdict(set)
    with engine.connect() as conn:
        for edition, person, kind in conn.execute(
            text("SELECT edition_id, subscriber_id, kind FROM mailevent")
        ):
            if edition is None or person is None:
                continue
            seen[edition, kind].add(person)
            if kind in BOUNCES:
                seen[edition, "bounced"].add(person)
        for edition, person, kind, source in conn.execute(
            text("SELECT edition_id, subscriber_id, kind, source FROM subscriptionevent")
        ):
            if edition is None or kind != "unsubscribed":
                continue
            seen[edition, "unsubscribed"].add(person)
            seen[edition, f"unsubscribed:{source}"].add(person)
    found: dict[int, dict[str, int]] = defaultdict(dict)
    for (edition, what), people in seen.items():
        found[edition][what] = len(people)
    return dict(found)


def _mail(conn: Connection, rows: Iterable[tuple[int | None, int | None, str, str]]) -> None:
    """Insert mail events (edition, person, kind, event id) in one statement."""
    values = [{"e": e, "s": s, "k": k, "i": i, "m": f"{i}@example.com"} for e, s, k, i in rows]
    conn.execute(
        text(
            "INSERT INTO mailevent (provider, provider_event_id, kind, email_key, "
            "subscriber_id, edition_id, occurred_at, created_at) VALUES "
            + ", ".join(
                f"('test', :i{n}, :k{n}, :m{n}, :s{n}, :e{n}, '2026-11-25 12:00:00', "
                "'2026-11-25 12:00:00')"
                for n in range(len(values))
            )
        ),
        {f"{key}{n}": value for n, row in enumerate(values) for key, value in row.items()},
    )


def _left(
    conn: Connection, edition: int | None, person: int, source: str, kind: str = "unsubscribed"
) -> None:
    conn.execute(
        text(
            "INSERT INTO subscriptionevent (subscriber_id, edition_id, kind, source, created_at) "
            "VALUES (:s, :e, :k, :src, '2026-11-25 12:00:00')"
        ),
        {"s": person, "e": edition, "k": kind, "src": source},
    )


def _reports(engine: Engine, editions: list[int]) -> dict[int, dict[str, int]]:
    with Session(engine) as session:
        return counters.reports(session, editions)


def test_the_counters_equal_the_people_counted_from_the_events(both_engine: Engine) -> None:
    engine = both_engine
    first, second, _ = _editions(engine, 6)
    people = [1, 2, 3, 4, 5, 6]
    with engine.begin() as conn:
        # One statement with two alike rows (a provider reporting twice) and a person's hard
        # and soft bounces: one person each.
        _mail(
            conn,
            [
                (first, people[0], "delivered", "a"),
                (first, people[0], "delivered", "b"),
                (first, people[1], "bounced_hard", "c"),
                (first, people[1], "bounced_soft", "d"),
                (first, None, "bounced_hard", "e"),  # an address nobody has: not a person
                (None, people[2], "complained", "f"),  # no edition named
            ],
        )
    with engine.begin() as conn:
        _mail(conn, [(first, people[2], "bounced_soft", "g")])
        _mail(conn, [(first, people[1], "bounced_hard", "h")])  # again, later
        _mail(conn, [(second, people[1], "complained", "i"), (first, people[3], "blocked", "j")])
        _left(conn, first, people[1], "bounce")
        _left(conn, first, people[1], "page")  # the same person again, another source
        _left(conn, first, people[2], "page")
        _left(conn, first, people[2], "page")  # twice from one source
        _left(conn, None, people[4], "page")  # not through an edition
        _left(conn, first, people[5], "operator", kind="subscribed")
    expected = _people(engine)
    assert expected[first] == {
        "delivered": 1,
        "bounced_hard": 1,
        "bounced_soft": 2,
        "bounced": 2,
        "blocked": 1,
        "unsubscribed": 2,
        "unsubscribed:bounce": 1,
        "unsubscribed:page": 2,
    }
    assert _reports(engine, [first, second]) == expected


def test_two_reports_about_one_person_at_once_count_once(postgres_url: str) -> None:
    """The second report waits for the first's lock on (edition, person), then sees it."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        first, _, _ = _editions(engine, 2)
        with engine.connect() as one:
            _mail(one, [(first, 1, "complained", "x1")])  # uncommitted
            done = threading.Event()

            def other() -> None:
                with engine.begin() as two:
                    _mail(two, [(first, 1, "complained", "x2")])
                done.set()

            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.5)
            assert not done.is_set()  # waiting on the lock
            one.commit()
            thread.join(10)
        assert done.is_set()
        assert _reports(engine, [first])[first] == {"complained": 1}
        assert _people(engine)[first] == {"complained": 1}
    finally:
        engine.dispose()


def test_an_upgrade_counts_the_events_already_there(both_engine: Engine) -> None:
    engine = both_engine
    from alembic import command

    first, second, _ = _editions(engine, 3)
    command.downgrade(alembic_config(engine), "0020")
    with engine.begin() as conn:
        _mail(conn, [(first, 1, "delivered", "a"), (first, 1, "delivered", "b")])
        _mail(conn, [(first, 2, "bounced_soft", "c"), (second, 3, "bounced_hard", "d")])
        _left(conn, first, 2, "bounce")
    upgrade(engine)
    expected = _people(engine)
    assert _reports(engine, [first, second]) == expected
    assert expected[second] == {"bounced_hard": 1, "bounced": 1}
    with engine.begin() as conn:  # and the triggers count from here on
        _mail(conn, [(second, 3, "bounced_soft", "e"), (second, 2, "delivered", "f")])
    assert _reports(engine, [first, second]) == _people(engine)


def _advisory_locks(conn: Connection) -> int:
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
        ).scalar_one()
    )


def test_one_statement_about_30000_people_takes_at_most_256_locks(postgres_url: str) -> None:
    """Each report statement locks the buckets its people fall into, not each person: with a
    lock per person (0021), about 20,000 people in one statement ran the server out of lock
    slots ("out of shared memory"). The counts stay each person once."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        first, second, _ = _editions(engine, 2)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscriber (email, email_key, created_at) "
                    "SELECT 'bulk' || g || '@example.com', 'bulk' || g || '@example.com', "
                    "'2026-11-25 12:00:00' FROM generate_series(1, 30000) AS g"
                )
            )
            people = "SELECT id FROM subscriber ORDER BY id LIMIT 30000"
            conn.execute(
                text(
                    "INSERT INTO mailevent (provider, provider_event_id, kind, email_key, "
                    "subscriber_id, edition_id, occurred_at, created_at) "
                    "SELECT 'test', 'bulk' || g, 'delivered', g || '@example.com', g, "
                    "CASE WHEN g % 2 = 0 THEN :first ELSE :second END, "
                    f"'2026-11-25 12:00:00', '2026-11-25 12:00:00' FROM ({people}) AS p(g)"
                ),
                {"first": first, "second": second},
            )
            held = _advisory_locks(conn)
            assert 0 < held <= 256
        with engine.begin() as conn:  # the same people again: nobody new
            _mail(conn, [(first, 2, "delivered", "again"), (second, 3, "delivered", "again2")])
        assert _reports(engine, [first, second]) == {
            first: {"delivered": 15000},
            second: {"delivered": 15000},
        }
        assert _reports(engine, [first, second]) == _people(engine)
    finally:
        engine.dispose()


def test_the_migration_to_buckets_goes_both_ways(postgres_url: str) -> None:
    """0024 rewrites the lock clause of 0021's functions in place, and back; the counts are
    right at each step."""
    from alembic import command

    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        first, _, _ = _editions(engine, 2)
        command.downgrade(alembic_config(engine), "0023")
        with engine.begin() as conn:
            _mail(conn, [(first, 1, "delivered", "a"), (first, 2, "delivered", "b")])
            assert _advisory_locks(conn) == 2  # a lock per person
        upgrade(engine)
        with engine.begin() as conn:
            _mail(conn, [(first, 1, "delivered", "c"), (first, 2, "bounced_soft", "d")])
            locks = conn.execute(
                text(
                    "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
            ).all()
        # Two-key advisory locks show their first key as an unsigned oid.
        assert {(int(c), int(o)) for c, o in locks} == {
            (2**32 - 21, (first * 40503 + person) % 256) for person in (1, 2)
        }
        assert _reports(engine, [first]) == _people(engine)
        assert _people(engine)[first] == {
            "delivered": 2,
            "bounced_soft": 1,
            "bounced": 1,
        }
    finally:
        engine.dispose()


def test_a_hand_edited_report_function_stops_0024_with_one_line_and_changes_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    """0024 checks both functions before changing either: with the second one edited by hand,
    ``db upgrade`` says which in one line (no traceback), and the first keeps 0021's lock."""
    from alembic import command

    from .test_cli import run

    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        command.downgrade(alembic_config(engine), "0023")
        with engine.begin() as conn:
            definition = conn.execute(
                text("SELECT pg_get_functiondef('subscriptionevent_report'::regproc)")
            ).scalar_one()
            edited = definition.replace("pg_advisory_xact_lock(", "pg_advisory_xact_lock(7 + ", 1)
            assert edited != definition
            conn.exec_driver_sql(edited)

        environ = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        environ.update(NEWSLETTER_DATABASE_URL=postgres_url, COLUMNS="200")
        result = run(["db", "upgrade"], environ, tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "subscriptionevent_report(): its lock clause is not the one" in result.stderr
        assert "nothing was changed" in result.stderr
        assert current_revision(engine) == "0023"
        with engine.connect() as conn:
            first = conn.execute(
                text("SELECT pg_get_functiondef('mailevent_report'::regproc)")
            ).scalar_one()
        assert "pg_advisory_xact_lock(p.edition_id, p.subscriber_id)" in first
    finally:
        engine.dispose()
