"""Set-based reads and writes for large subscriber lists: what an import does, in batches.

The ORM builds and tracks one object per row (about 300 us a row in an import, more than half
of it in SQLModel's constructors); these functions send plain parameter lists to
``executemany`` and read plain tuples, a few microseconds a row, in chunks that keep every
statement within SQLite's and PostgreSQL's parameter limits. Each function does one thing;
the caller (:func:`newsletter.audience.importing.import_subscribers`) decides what to write and
commits. Column values the models fill with ``default_factory`` are given explicitly here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import ARRAY, String, Text, any_, bindparam, cast, func, literal, select, update
from sqlmodel import Session

from newsletter.storage.models import (
    Subscriber,
    Subscription,
    SubscriptionEvent,
    erased_key,
    table_of,
)

_SUBSCRIBER = table_of(Subscriber)
_SUBSCRIPTION = table_of(Subscription)
_EVENT = table_of(SubscriptionEvent)

#: Keys per IN list (twice that many parameters with the erased keys).
CHUNK = 2_000
#: Rows per executemany call: bounded memory for the parameter lists of a million rows.
WRITE_CHUNK = 20_000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (IN lists, executemany batches)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _in(column: Any, values: Sequence[Any], session: Session) -> Any:
    """``column IN (...)`` with the values as one parameter instead of thousands, which
    SQLAlchemy would expand and the database parse one by one.

    On SQLite the values go as a JSON array (``IN (SELECT value FROM json_each(?))``, which
    still probes the index). On PostgreSQL as one newline-joined string split by the server
    (``= ANY(string_to_array(...))``): psycopg adapts a list of 4,000 strings element by
    element in Python (8 ms), the joined string in 0.7 ms. Values that hold a newline
    themselves (no address or number does) go as an array, which is always right.
    """
    if not _postgres(session):
        listed = func.json_each(literal(json.dumps(list(values)), Text)).table_valued("value")
        return column.in_(select(listed.c.value))
    joined = "\n".join(map(str, values))
    if joined.count("\n") != len(values) - 1 or not values:
        return column == any_(literal(list(values), ARRAY(column.type)))
    split = func.string_to_array(literal(joined, Text), literal("\n", Text))
    element = Text() if isinstance(column.type, String) else column.type  # no varchar(n) cut
    return column == any_(cast(split, ARRAY(element)))


def _stamp(session: Session, now: datetime) -> Any:
    """``now`` as the driver is given it for a timestamp column (an aware datetime for
    psycopg; for SQLite the naive UTC text SQLAlchemy would write), converted once for all
    the rows of a write instead of once per row and column."""
    if _postgres(session):
        return now
    dialect = session.get_bind().dialect
    # The dialect's own type: the generic one hands sqlite3 a datetime, which it would turn
    # into text its own way (no ".000000" on a whole second, so it sorts apart from the ORM's).
    processor = _SUBSCRIBER.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    return processor(now) if processor else now


def _write(
    session: Session, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
) -> None:
    """Insert plain tuples (timestamps from :func:`_stamp`): COPY on PostgreSQL, the
    driver's own ``executemany`` on SQLite, :data:`WRITE_CHUNK` rows at a time (SQLAlchemy's
    per-row parameter processing was half an import's time there)."""
    if _postgres(session):
        _copy(session, table, columns, rows)
        return
    statement = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    connection = session.connection()
    while chunk := list(islice(rows, WRITE_CHUNK)):
        connection.exec_driver_sql(statement, chunk)


def _copy(
    session: Session, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
) -> None:
    """PostgreSQL's COPY FROM STDIN on the session's own connection (same transaction):
    several times faster than multi-row INSERTs for a million rows."""
    from psycopg import Connection  # here: PostgreSQL's driver is an optional install

    raw = session.connection().connection.dbapi_connection
    assert isinstance(raw, Connection)  # psycopg 3, the driver database.py always names
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


@dataclass(frozen=True, slots=True)
class Known:
    """What an import needs of a subscriber already stored."""

    id: int
    name: str | None
    timezone: str | None
    suppressed: str | None


def find_subscribers(session: Session, *, keys: Sequence[str]) -> dict[str, Known]:
    """The stored subscribers with these keys; an erased person is found by the hash of the
    key (:func:`newsletter.storage.models.erased_key`), so an import never re-adds them."""
    found: dict[str, Known] = {}
    columns = (
        _SUBSCRIBER.c.email_key,
        _SUBSCRIBER.c.id,
        _SUBSCRIBER.c.name,
        _SUBSCRIBER.c.timezone,
        _SUBSCRIBER.c.suppressed,
    )
    for chunk in chunks(keys, CHUNK):
        hashed = {erased_key(k): k for k in chunk}
        wanted = [*chunk, *hashed]
        for key, id_, name, tz, suppressed in session.execute(
            select(*columns).where(_in(_SUBSCRIBER.c.email_key, wanted, session))
        ):
            found[hashed.get(key, key)] = Known(id_, name, tz, suppressed)
    return found


def insert_subscribers(
    session: Session, *, rows: Sequence[tuple[str, str, str | None, str | None]], now: datetime
) -> dict[str, int]:
    """Insert (email, email_key, name, timezone) rows; returns email_key -> new id."""
    stamp = _stamp(session, now)
    _write(
        session,
        "subscriber",
        ("email", "email_key", "name", "timezone", "created_at", "soft_bounces", "confirm_count"),
        ((email, key, name, tz, stamp, 0, 0) for email, key, name, tz in rows),
    )
    ids: dict[str, int] = {}
    for keys in chunks([key for _, key, _, _ in rows], CHUNK):
        query = select(_SUBSCRIBER.c.email_key, _SUBSCRIBER.c.id).where(
            _in(_SUBSCRIBER.c.email_key, keys, session)
        )
        ids.update((key, id_) for key, id_ in session.execute(query))
    return ids


def update_subscribers(
    session: Session, *, changes: Sequence[tuple[int, str | None, str | None]]
) -> None:
    """Set (id, name, timezone) on existing subscribers."""
    statement = (
        update(_SUBSCRIBER)
        .where(_SUBSCRIBER.c.id == bindparam("b_id"))
        .values(name=bindparam("b_name"), timezone=bindparam("b_tz"))
    )
    for chunk in chunks(changes, WRITE_CHUNK):
        session.execute(
            statement, [{"b_id": i, "b_name": name, "b_tz": tz} for i, name, tz in chunk]
        )


def find_subscriptions(
    session: Session, *, subscriber_ids: Sequence[int]
) -> dict[tuple[int, int], str]:
    """(subscriber, newsletter) -> status, for these subscribers."""
    found: dict[tuple[int, int], str] = {}
    columns = (_SUBSCRIPTION.c.subscriber_id, _SUBSCRIPTION.c.newsletter_id, _SUBSCRIPTION.c.status)
    for chunk in chunks(subscriber_ids, CHUNK):
        for sid, nid, status in session.execute(
            select(*columns).where(_in(_SUBSCRIPTION.c.subscriber_id, chunk, session))
        ):
            found[(sid, nid)] = status
    return found


def subscribe(
    session: Session,
    *,
    rows: Sequence[tuple[int, int, str]],
    status: str,
    source: str,
    now: datetime,
) -> None:
    """Insert a subscription with ``status`` and its ``subscribed`` event for each
    (subscriber, newsletter, event detail) row."""
    stamp = _stamp(session, now)
    _write(
        session,
        "subscription",
        ("subscriber_id", "newsletter_id", "status", "created_at", "updated_at"),
        ((sid, nid, status, stamp, stamp) for sid, nid, _ in rows),
    )
    _write(
        session,
        "subscriptionevent",
        ("subscriber_id", "newsletter_id", "kind", "source", "detail", "created_at"),
        ((sid, nid, "subscribed", source, detail, stamp) for sid, nid, detail in rows),
    )
