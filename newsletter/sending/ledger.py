"""The delivery ledger: one Delivery row per (edition, subscriber), the only place they change.

The unique key on (edition_id, subscriber_id) is what makes a send never mail anyone twice: the
audience is written once when the send starts. A running send *claims* a batch (status
``claimed``, its own lease owner and expiry) before it builds a single message, so two sends of
one edition never hold the same delivery; a delivery leaves ``claimed`` only when the backend's
answer is recorded (unlike listmonk, which moves its checkpoint when a batch is fetched and so
skips recipients after a crash). A send that dies leaves its batch claimed until the lease
expires; then any send takes it over: at most the in-flight batch is sent again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    Table,
    TextClause,
    Update,
    any_,
    bindparam,
    delete,
    func,
    text,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Dialect
from sqlmodel import Session, col, select

from newsletter.edition.timing import local_wave
from newsletter.storage import counters
from newsletter.storage.models import (
    OPEN_STATUSES,
    TROUBLE_PREDICATE,
    UNFINISHED_STATUSES,
    Delivery,
    DeliveryPulse,
    DeliveryStatus,
    EditionCounts,
    EditionTotals,
    SubscriptionStatus,
    UTCDateTime,
    sql_list,
    table_of,
)

# The states as SQL literals, for the statements written as text.
_PENDING = sql_list([DeliveryStatus.pending.value])
_CLAIMED = sql_list([DeliveryStatus.claimed.value])
_UNFINISHED = sql_list(UNFINISHED_STATUSES)
_ACTIVE = sql_list([SubscriptionStatus.active.value])
_DELIVERY: Table = table_of(Delivery)


def open_deliveries(session: Session, *, edition_id: int, newsletter_id: int) -> int:
    """Write a pending delivery for everyone active on the newsletter now; returns the count.

    One INSERT ... SELECT, so a million subscribers never pass through Python. People who join
    later wait for the next edition; rows that already exist are left alone.

    This is the only statement that writes deliveries, and it reads the subscribers it names
    in the same statement: that is what keeps ``delivery.subscriber_id`` pointing at a real
    subscriber now that the table has no foreign keys (their per-row checks were more than
    half of this statement's time at a million rows; migration 0022).
    """
    # The usual case is an edition with no deliveries yet: then the anti-join against the
    # delivery table (a probe of its unique index per subscriber) is skipped.
    started = session.execute(
        text("SELECT 1 FROM delivery WHERE edition_id = :edition_id LIMIT 1"),
        {"edition_id": edition_id},
    ).first()
    unseen = (
        """
              AND NOT EXISTS (
                  SELECT 1 FROM delivery AS d
                  WHERE d.edition_id = :edition_id AND d.subscriber_id = s.subscriber_id
              )"""
        if started
        else ""
    )
    result = session.execute(
        text(
            f"""
            INSERT INTO delivery (edition_id, subscriber_id, status, attempts)
            SELECT :edition_id, s.subscriber_id, {_PENDING}, 0
            FROM subscription AS s
            JOIN subscriber AS r ON r.id = s.subscriber_id
            WHERE s.newsletter_id = :newsletter_id
              AND s.status = {_ACTIVE}
              AND r.suppressed IS NULL{unseen}
            ORDER BY s.subscriber_id
            """
        ),
        {"edition_id": edition_id, "newsletter_id": newsletter_id},
    )
    return int(getattr(result, "rowcount", 0) or 0)


#: Who a send would mail next, without writing anything: before the start, everyone active
#: (what :func:`open_deliveries` would write); after it, the open deliveries whose subscriber
#: is still active (a send skips the others). Keyset-paged by subscriber id.
_WOULD_SEND = {
    False: f"""
        SELECT r.id, r.email, r.name FROM subscription AS s
        JOIN subscriber AS r ON r.id = s.subscriber_id
        WHERE s.newsletter_id = :newsletter_id AND s.status = {_ACTIVE}
          AND r.suppressed IS NULL AND r.id > :after
        ORDER BY r.id LIMIT :limit
    """,
    True: f"""
        SELECT r.id, r.email, r.name FROM delivery AS d
        JOIN subscriber AS r ON r.id = d.subscriber_id
        JOIN subscription AS s
          ON s.subscriber_id = r.id AND s.newsletter_id = :newsletter_id
        WHERE d.edition_id = :edition_id AND d.status IN ({_UNFINISHED})
          AND s.status = {_ACTIVE} AND r.suppressed IS NULL AND r.id > :after
        ORDER BY r.id LIMIT :limit
    """,
}


def would_send(
    session: Session,
    *,
    edition_id: int,
    newsletter_id: int,
    started: bool,
    after_id: int = 0,
    limit: int = 1000,
) -> list[tuple[int, str, str | None]]:
    """(subscriber id, email, name) of the next ``limit`` people a send would mail after
    ``after_id``; reads only (``edition send --dry-run``, the confirmation prompt)."""
    rows = session.execute(
        text(_WOULD_SEND[started]),
        {
            "edition_id": edition_id,
            "newsletter_id": newsletter_id,
            "after": after_id,
            "limit": limit,
        },
    ).all()
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


def would_send_count(
    session: Session, *, edition_id: int, newsletter_id: int, started: bool
) -> int:
    """How many people :func:`would_send` lists in all."""
    query = (
        _WOULD_SEND[started]
        .split("ORDER BY")[0]
        .replace("SELECT r.id, r.email, r.name", "SELECT COUNT(*)")
    )
    return int(
        session.execute(
            text(query),
            {"edition_id": edition_id, "newsletter_id": newsletter_id, "after": 0},
        ).scalar_one()
    )


def schedule_local_waves(
    session: Session, *, edition_id: int, day: date, at: time, default_timezone: str
) -> dict[datetime, int]:
    """Local-time delivery: each pending delivery waits until ``at`` on local ``day`` in its
    subscriber's zone (the newsletter's when the subscriber has none), in hourly waves.

    One UPDATE per distinct zone (a few hundred at most), never one per subscriber. Returns
    how many deliveries each wave (a UTC hour) holds.
    """
    zones = session.execute(
        text(
            f"""
            SELECT r.timezone, COUNT(*) FROM delivery AS d
            JOIN subscriber AS r ON r.id = d.subscriber_id
            WHERE d.edition_id = :e AND d.status = {_PENDING}
            GROUP BY r.timezone
            """
        ),
        {"e": edition_id},
    ).all()
    waves: dict[datetime, int] = {}
    for zone, count in zones:
        try:
            due = local_wave(day, at, zone or default_timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown zone: the newsletter's
            due = local_wave(day, at, default_timezone)
        same_zone = "r.timezone IS NULL" if zone is None else "r.timezone = :zone"
        session.execute(
            text(
                f"""
                UPDATE delivery SET retry_at = :due
                WHERE edition_id = :e AND status = {_PENDING} AND subscriber_id IN (
                    SELECT r.id FROM subscriber AS r WHERE {same_zone}
                )
                """
            ).bindparams(bindparam("due", type_=UTCDateTime())),
            {"e": edition_id, "due": due, "zone": zone},
        )
        waves[due] = waves.get(due, 0) + int(count)
    return dict(sorted(waves.items()))


@dataclass(frozen=True, slots=True)
class OpenDelivery:
    id: int
    subscriber_id: int
    email: str
    name: str | None
    still_subscribed: bool  # re-checked right before sending: unsubscribes take effect now
    attempts: int = 0  # sends tried before this one
    soft_bounces: int = 0  # the subscriber's soft bounces in a row (an accepted send resets)


def claimable(now: datetime) -> ColumnElement[bool]:
    """A delivery a send may take at ``now``: open and due (a deferred retry or a local-time
    wave whose time came), or claimed by a send whose lease expired. The one definition the
    claim, its probe and the benchmarks share."""
    d = _DELIVERY.c
    return (d.status.in_(OPEN_STATUSES) & (d.retry_at.is_(None) | (d.retry_at <= now))) | (
        (d.status == DeliveryStatus.claimed.value) & (d.lease_until < now)
    )


def has_claimable(session: Session, *, edition_id: int, now: datetime) -> bool:
    """Whether a send would find anything to claim at ``now`` (one indexed probe, no claim)."""
    probe = (
        sa_select(_DELIVERY.c.id)
        .where(_DELIVERY.c.edition_id == edition_id, claimable(now))
        .limit(1)
    )
    return session.execute(probe).first() is not None


#: Run before a claim on PostgreSQL, in its transaction. The claim must walk
#: ix_delivery_edition_keyset in id order and stop after ``limit`` rows. PostgreSQL estimates
#: "this edition, past this id, open" as if the three were independent, or from statistics
#: taken before the edition existed: a row or a thousand where a million qualify. For so few
#: it read every remaining row of the edition (a bitmap scan, or the edition's other index)
#: and sorted them: 406 ms a claim at 52M delivery rows against 0.4 ms for the ordered walk.
#: With bitmap scans and sorts priced out the walk is the plan, whatever the statistics say;
#: for this transaction only (set_config(..., true) is SET LOCAL, both in one round trip).
CLAIM_PLAN = text(
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)"
)


def claim_statement(
    dialect: str,
    *,
    edition_id: int,
    after_id: int,
    limit: int,
    owner: str,
    lease_until: datetime,
    now: datetime,
) -> Update:
    """The claim: ``UPDATE delivery … WHERE id is one of the next ``limit`` claimable ids past
    ``after_id`` RETURNING id`` for ``dialect`` (``postgresql`` or ``sqlite``); see
    :func:`claim_batch`, which runs it (after :data:`CLAIM_PLAN` on PostgreSQL)."""
    d = _DELIVERY.c
    chosen = (
        sa_select(d.id)
        .where(d.edition_id == edition_id, d.id > after_id, claimable(now))
        .order_by(d.id)
        .limit(limit)
    )
    if dialect == "postgresql":
        # ``id = ANY(ARRAY(subquery))``: the locking subquery runs once (an InitPlan) and the
        # update finds its rows by primary key. As ``id IN (subquery)``, a plan made without
        # statistics (a fresh or just-loaded table) was a nested-loop semi-join that re-ran
        # the subquery for every row of the edition; each re-run skipped the rows the
        # statement had already claimed and returned the next ``limit``, so one claim took
        # the whole edition (tests/test_tally.py claims 10 of 30 on a fresh database).
        locked = chosen.with_for_update(skip_locked=True).scalar_subquery()
        where = d.id == any_(func.array(locked))
    else:
        # SQLite runs ``IN (subquery)`` once, into a list, under its single writer lock.
        where = d.id.in_(chosen.scalar_subquery())
    return (
        update(_DELIVERY)
        .where(where, claimable(now))
        .values(status=DeliveryStatus.claimed.value, lease_owner=owner, lease_until=lease_until)
        .returning(d.id)
    )


def claim_batch(
    session: Session,
    *,
    edition_id: int,
    newsletter_id: int,
    after_id: int,
    limit: int,
    owner: str,
    lease_seconds: float,
    now: datetime,
) -> list[OpenDelivery]:
    """Claim and return the next ``limit`` open deliveries with id > ``after_id``; commits.

    Open means pending, deferred, or claimed by a send whose lease has expired. The claim is
    one statement (UPDATE ... WHERE id is one of the next ``limit`` claimable ids RETURNING
    id, the ids chosen once by a subquery), so
    of several senders racing, each gets rows nobody else holds and an empty answer means
    nothing claimable is left past ``after_id``: SQLite runs the statement under its single
    writer lock, and on PostgreSQL the inner SELECT skips rows another sender has locked.
    (A SELECT, then an UPDATE, let two SQLite senders pick the same ids; the loser got an empty
    claim, took it for the end, and stopped: ``--concurrency`` then ran one connection.)
    Subscription and suppression are read after the claim: an unsubscribe committed before
    this moment is honoured. A delivery whose subscriber row is gone (deliveries reference
    subscribers without a database key, see migration 0022) comes back not subscribed, so
    the send skips it instead of leaving it claimed.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(CLAIM_PLAN)
    claimed = session.execute(
        claim_statement(
            dialect,
            edition_id=edition_id,
            after_id=after_id,
            limit=limit,
            owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            now=now,
        )
    )
    ids = sorted(claimed.scalars().all())
    if not ids:
        session.commit()
        return []
    session.commit()
    rows = session.execute(
        text(
            f"""
            SELECT d.id, d.subscriber_id, COALESCE(r.email, ''), r.name,
                   CASE WHEN s.status = {_ACTIVE} AND r.suppressed IS NULL
                        AND r.id IS NOT NULL THEN 1 ELSE 0 END,
                   d.attempts, r.soft_bounces
            FROM delivery AS d
            LEFT JOIN subscriber AS r ON r.id = d.subscriber_id
            LEFT JOIN subscription AS s
                   ON s.subscriber_id = d.subscriber_id AND s.newsletter_id = :newsletter_id
            WHERE d.edition_id = :edition_id
              AND d.id >= :first AND d.id <= :last
              AND d.status = {_CLAIMED} AND d.lease_owner = :owner
            ORDER BY d.id
            """
        ),
        {
            "edition_id": edition_id,
            "newsletter_id": newsletter_id,
            "first": ids[0],
            "last": ids[-1],
            "owner": owner,
        },
    ).all()
    return [
        OpenDelivery(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5]), int(r[6] or 0)) for r in rows
    ]


#: Answers the server or provider took: sent, or queued by an email API.
ACCEPTED = frozenset({DeliveryStatus.sent, DeliveryStatus.queued})


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    status: DeliveryStatus
    code: int | None = None
    detail: str | None = None
    message_id: str | None = None
    provider_message_id: str | None = None
    retry_at: datetime | None = None  # for deferred: not before this


def record(session: Session, *, outcomes: Sequence[Outcome], owner: str, now: datetime) -> int:
    """Store what the backend answered for deliveries ``owner`` claimed: one statement for
    the accepted answers (sent or queued, nothing to retry) and one for the rest.

    Returns how many rows it updated. Fewer than ``len(outcomes)`` means some deliveries were
    no longer this owner's claim (taken over after its lease expired): the caller counts and
    reports that, it is never silent.

    The answers travel as ``UPDATE … FROM (VALUES …)`` (SQLite 3.33+, PostgreSQL): an
    ``executemany`` of one UPDATE per answer cost a sender about a seventh of its CPU."""
    if len(outcomes) > RECORD_ROWS:  # bound parameters are limited (PostgreSQL: 65,535)
        return sum(
            record(session, outcomes=outcomes[k : k + RECORD_ROWS], owner=owner, now=now)
            for k in range(0, len(outcomes), RECORD_ROWS)
        )
    accepted: list[Outcome] = []
    rest: list[Outcome] = []
    for o in outcomes:
        (accepted if o.status in ACCEPTED and o.retry_at is None else rest).append(o)
    updated = _record_accepted(session, accepted, owner=owner, now=now) if accepted else 0
    return updated + (_record_rest(session, rest, owner=owner, now=now) if rest else 0)


def _record_rest(
    session: Session, outcomes: Sequence[Outcome], *, owner: str, now: datetime
) -> int:
    """Record any answers (failures, deferrals, skips...): 8 named parameters a row."""
    params: dict[str, object] = {"owner": owner, "now": now}
    for i, o in enumerate(outcomes):
        answered = o.status in ACCEPTED
        params[f"i{i}"] = o.delivery_id
        params[f"s{i}"] = o.status.value
        params[f"c{i}"] = None if answered else o.code
        params[f"t{i}"] = None if answered else (o.detail or "")[:1000] or None
        params[f"m{i}"] = o.message_id
        params[f"p{i}"] = o.provider_message_id
        params[f"n{i}"] = 0 if o.status == DeliveryStatus.skipped else 1
        params[f"r{i}"] = o.retry_at
    statement = _record_statement(len(outcomes), session.get_bind().dialect.name)
    result = session.execute(statement, params)
    return int(getattr(result, "rowcount", 0) or 0)


def _record_accepted(
    session: Session, accepted: Sequence[Outcome], *, owner: str, now: datetime
) -> int:
    """Record answers that were accepted (sent or queued, nothing to retry): 4 values a row
    instead of :func:`_record_statement`'s 8, passed to the driver as they are. Almost every
    answer of a send is one of these, and SQLAlchemy's processing of 400 named parameters was
    a third of what recording cost a sender (``bench/record.py``)."""
    conn = session.connection()
    dialect = conn.dialect
    args: list[object] = [_stamp(dialect)(now)]
    for o in accepted:
        args += (o.delivery_id, o.status.value, o.message_id, o.provider_message_id)
    args.append(owner)
    statement = _accepted_sql(len(accepted), dialect.name, dialect.paramstyle == "qmark")
    return int(conn.exec_driver_sql(statement, tuple(args)).rowcount or 0)


@functools.lru_cache(maxsize=4)
def _stamp(dialect: Dialect) -> Callable[[datetime], object]:
    """How a timestamp column's value goes to this driver (what :class:`UTCDateTime` and the
    dialect's own DateTime make of it when SQLAlchemy binds it)."""
    process = UTCDateTime().bind_processor(dialect)
    return process if process is not None else (lambda value: value)


@functools.lru_cache(maxsize=16)
def _accepted_sql(rows: int, dialect: str, qmark: bool) -> str:
    """The UPDATE of :func:`_record_accepted` for ``rows`` answers, in the driver's own
    positional placeholders: the time, then each row's (id, status, message id, provider
    id), then the owner. PostgreSQL types the VALUES columns from their first row, which may
    be NULL, so they are cast."""
    mark = "?" if qmark else "%s"
    row = f"({mark}, {mark}, {mark}, {mark})"
    first = "CAST(column1 AS INTEGER)" if dialect == "postgresql" else "column1"
    return f"""
        UPDATE delivery SET
            status = v.status, error_code = NULL, error_text = NULL,
            message_id = CAST(v.message_id AS VARCHAR),
            provider_message_id = CAST(v.provider_id AS VARCHAR),
            attempts = delivery.attempts + 1, updated_at = {mark}, retry_at = NULL,
            lease_owner = NULL, lease_until = NULL
        FROM (SELECT {first} AS id, CAST(column2 AS VARCHAR) AS status,
                     column3 AS message_id, column4 AS provider_id
              FROM (VALUES {", ".join([row] * rows)}) AS w) AS v
        WHERE delivery.id = v.id AND delivery.status = {_CLAIMED}
          AND delivery.lease_owner = {mark}
    """


#: Answers per UPDATE: 8 bound parameters each, well under PostgreSQL's 65,535 and SQLite's
#: 32,766 (a batch of 10,000 skipped deliveries is recorded in one call).
RECORD_ROWS = 1_000


@functools.lru_cache(maxsize=16)
def _record_statement(rows: int, dialect: str) -> TextClause:
    """The UPDATE for ``rows`` answers (cached: a send records 50 at a time). PostgreSQL types
    the VALUES columns from their first row, so a column that is NULL there is cast back."""
    pg = dialect == "postgresql"
    values = ", ".join(
        f"(:i{i}, :s{i}, :c{i}, :t{i}, :m{i}, :p{i}, :n{i}, :r{i})" for i in range(rows)
    )
    code = "CAST(v.code AS INTEGER)" if pg else "v.code"
    tried = "CAST(v.tried AS INTEGER)" if pg else "v.tried"
    retry = "CAST(v.retry_at AS TIMESTAMP WITH TIME ZONE)" if pg else "v.retry_at"
    text_of = "CAST(v.text AS VARCHAR)" if pg else "v.text"
    # Not a CTE: Python's sqlite3 sets rowcount only for statements that start with UPDATE.
    # VALUES names its columns column1, column2, … on both databases.
    names = ("id", "status", "code", "text", "message_id", "provider_id", "tried", "retry_at")
    columns = ", ".join(f"column{k + 1} AS {name}" for k, name in enumerate(names))
    sql = f"""
        UPDATE delivery SET
            status = v.status, error_code = {code}, error_text = {text_of},
            message_id = CAST(v.message_id AS VARCHAR),
            provider_message_id = CAST(v.provider_id AS VARCHAR),
            attempts = delivery.attempts + {tried}, updated_at = :now, retry_at = {retry},
            lease_owner = NULL, lease_until = NULL
        FROM (SELECT {columns} FROM (VALUES {values}) AS w) AS v
        WHERE delivery.id = v.id AND delivery.status = {_CLAIMED}
          AND delivery.lease_owner = :owner
    """
    typed = [bindparam(f"r{i}", type_=UTCDateTime()) for i in range(rows)]
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()), *typed)


def counts(session: Session, *, edition_id: int, pruned: bool = True) -> dict[str, int]:
    """Deliveries of an edition by status (every status present, zero if none), with the
    counts kept for rows pruned by :mod:`newsletter.operations.retention` unless ``pruned`` is
    False.

    A finished edition's counts were taken when it finished (:func:`settle`): read, not
    counted again (a million rows per edition)."""
    if pruned:
        settled = session.exec(
            select(EditionCounts.counts).where(EditionCounts.edition_id == edition_id)
        ).first()
        if settled is not None:
            kept = json.loads(settled)
            return {s.value: int(kept.get(s.value, 0)) for s in DeliveryStatus}
    found = counters.tallies(session, [edition_id]).get(edition_id, {})
    totals = {s.value: found.get(s.value, 0) for s in DeliveryStatus}
    kept = session.get(EditionTotals, edition_id) if pruned else None
    if kept is not None:
        for state, n in kept.by_state.items():
            totals[state] = totals.get(state, 0) + n
    return totals


def release(session: Session, *, ids: Sequence[int], owner: str) -> None:
    """Give claimed deliveries back to the queue untouched (they were never handed over)."""
    if ids:
        session.execute(
            update(_DELIVERY)
            .where(
                _DELIVERY.c.id.in_(ids),
                _DELIVERY.c.status == DeliveryStatus.claimed.value,
                _DELIVERY.c.lease_owner == owner,
            )
            .values(status=DeliveryStatus.pending.value, lease_owner=None, lease_until=None)
        )


def postpone(session: Session, *, until: Mapping[int, datetime], owner: str, reason: str) -> None:
    """Give claimed deliveries back to the queue, not before ``until[id]``, without counting
    an attempt (they were never handed over: a per-domain limit or the warm-up held them)."""
    if until:
        session.execute(
            update(_DELIVERY)
            .where(
                _DELIVERY.c.id == bindparam("b_id"),
                _DELIVERY.c.status == DeliveryStatus.claimed.value,
                _DELIVERY.c.lease_owner == owner,
            )
            .values(
                status=DeliveryStatus.pending.value,
                lease_owner=None,
                lease_until=None,
                retry_at=bindparam("b_until", type_=UTCDateTime()),
                error_text=reason[:1000] or None,
            ),
            [{"b_id": i, "b_until": t} for i, t in until.items()],
        )


def renew(
    session: Session, *, ids: Sequence[int], owner: str, now: datetime, lease_seconds: float
) -> set[int]:
    """Extend ``owner``'s lease on ``ids`` to ``now + lease_seconds``; returns the ids it still
    holds. A live sender calls this before handing each chunk over (and while a slow chunk is
    sent), so a slow relay or a rate limit never lets its lease run out under it; an id
    missing from the answer was taken over by another sender and must not be sent."""
    if not ids:
        return set()
    held = session.execute(
        update(_DELIVERY)
        .where(
            _DELIVERY.c.id.in_(ids),
            _DELIVERY.c.status == DeliveryStatus.claimed.value,
            _DELIVERY.c.lease_owner == owner,
        )
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .returning(_DELIVERY.c.id)
    )
    return set(held.scalars())


def release_owner(session: Session, *, owner: str) -> int:
    """Give every delivery a dead sender still claims back to the queue (see
    :func:`newsletter.sending.journal.recover`: what it handed over was recorded first)."""
    result = session.execute(
        update(_DELIVERY)
        .where(_DELIVERY.c.lease_owner == owner, _DELIVERY.c.status == DeliveryStatus.claimed.value)
        .values(status=DeliveryStatus.pending.value, lease_owner=None, lease_until=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def settle(session: Session, *, edition_id: int, counts: Mapping[str, int], now: datetime) -> None:
    """Keep ``counts`` (from :func:`counts`, pruned rows included) as the finished edition's
    figures. Only :func:`retry_failed` changes a finished edition's rows, and it unsettles;
    pruning moves rows into :class:`EditionTotals` without changing a total."""
    session.merge(
        EditionCounts(
            edition_id=edition_id,
            counts=json.dumps({k: v for k, v in counts.items() if v}),
            settled_at=now,
        )
    )
    # Its send rate is history now: a row per second of the send is not kept for years.
    session.execute(delete(DeliveryPulse).where(col(DeliveryPulse.edition_id) == edition_id))


def unsettle(session: Session, *, edition_id: int) -> None:
    """Forget a finished edition's kept counts: its rows are about to change."""
    session.execute(delete(EditionCounts).where(col(EditionCounts.edition_id) == edition_id))


def retry_failed(
    session: Session, *, edition_id: int, include_unknown: bool = False, code: int | None = None
) -> int:
    """Put failed (and optionally unknown) deliveries back to pending; returns how many.

    An operator's decision, never automatic: ``unknown`` ones may already be in the inbox.
    ``code`` limits it to one server reply code (e.g. 421 a relay gave to everyone).
    """
    statuses = [DeliveryStatus.failed.value] + (
        [DeliveryStatus.unknown.value] if include_unknown else []
    )
    query = (
        update(_DELIVERY)
        .where(_DELIVERY.c.edition_id == edition_id, _DELIVERY.c.status.in_(statuses))
        .values(status=DeliveryStatus.pending.value, attempts=0, retry_at=None)
    )
    if code is not None:
        query = query.where(_DELIVERY.c.error_code == code)
    changed = int(getattr(session.execute(query), "rowcount", 0) or 0)
    if changed:
        unsettle(session, edition_id=edition_id)
    return changed


def open_count(session: Session, *, edition_id: int) -> int:
    """Deliveries a send still has to finish: pending, deferred or claimed."""
    return int(
        session.exec(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.edition_id == edition_id,
                col(Delivery.status).in_(UNFINISHED_STATUSES),
            )
        ).one()
    )


def next_retry_at(session: Session, *, edition_id: int) -> datetime | None:
    """When the earliest waiting delivery (deferred, or pending for a later local-time wave)
    or expiring lease becomes claimable again."""
    retry = session.exec(
        select(func.min(Delivery.retry_at)).where(
            Delivery.edition_id == edition_id, col(Delivery.status).in_(OPEN_STATUSES)
        )
    ).one()
    lease = session.exec(
        select(func.min(Delivery.lease_until)).where(
            Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.claimed.value
        )
    ).one()
    # func.min keeps the column type, so both come back timezone-aware.
    return min((t for t in (retry, lease) if t is not None), default=None)


@dataclass(frozen=True, slots=True)
class Progress:
    counts: dict[str, int]
    sent_last_minute: int
    recent_errors: list[tuple[str, int | None, str]]  # (email, code, text)


def progress(session: Session, *, edition_id: int, now: datetime) -> Progress:
    """Counts by state, the send rate over the minute before ``now`` and the latest errors.

    Three small reads whatever the edition's size: the delivery counters
    (:func:`newsletter.storage.counters.tallies`), the 60 per-second acceptance counts before
    ``now`` (:class:`DeliveryPulse`), and the five latest
    troubled rows through the partial index ``ix_delivery_trouble``. Counting the rows
    accepted in the last minute read the whole edition: 300 ms at 52M delivery rows."""
    since = int((now - timedelta(minutes=1)).timestamp())
    recent = session.exec(
        select(func.coalesce(func.sum(DeliveryPulse.n), 0)).where(
            DeliveryPulse.edition_id == edition_id,
            col(DeliveryPulse.second) >= since,
            col(DeliveryPulse.second) <= int(now.timestamp()),
        )
    ).one()
    errors = session.execute(
        text(
            f"""
            SELECT r.email, d.error_code, d.error_text FROM delivery AS d
            JOIN subscriber AS r ON r.id = d.subscriber_id
            WHERE d.edition_id = :edition_id AND d.{TROUBLE_PREDICATE}
              AND d.error_text IS NOT NULL
            ORDER BY d.updated_at DESC, d.id DESC LIMIT 5
            """
        ),
        {"edition_id": edition_id},
    ).all()
    return Progress(
        counts=counts(session, edition_id=edition_id),
        sent_last_minute=int(recent),
        recent_errors=[(e[0], e[1], e[2]) for e in errors],
    )
