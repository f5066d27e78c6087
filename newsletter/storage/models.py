"""SQLModel tables: the store's schema. Alembic migrations in ``newsletter/migrations`` mirror it.

Times are stored in UTC and always come back timezone-aware (see :class:`UTCDateTime`), because
SQLite drops offsets and a naive datetime compared with an aware one is a bug waiting to happen.

Words: a *comparison* is one content item; an *edition* is one mailing of a newsletter; a
*delivery* is one recipient of one edition.
"""

from __future__ import annotations

import enum
import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table a table model maps (its ``__table__``), for the statements written
    without the ORM. SQLModel's type hints do not declare ``__table__``; the mapper's
    ``local_table`` is the same object, typed."""
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and returned timezone-aware on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} refused: give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EditionStatus(enum.StrEnum):
    """draft -> sending -> sent; sending <-> paused; draft/sending/paused -> cancelled."""

    draft = "draft"
    sending = "sending"
    paused = "paused"
    cancelled = "cancelled"
    sent = "sent"


class DeliveryStatus(enum.StrEnum):
    """Where one delivery stands.

    ``pending`` and ``deferred`` are open (a send will attempt them); ``claimed`` is held by one
    running send until its lease expires; the rest are closed. ``unknown`` means the message was
    handed to the server and the answer was lost: it is not retried automatically, because the
    recipient may already have it.
    """

    pending = "pending"
    claimed = "claimed"
    sent = "sent"
    queued = "queued"
    deferred = "deferred"
    failed = "failed"
    unknown = "unknown"
    skipped = "skipped"


#: Deliveries a send still has to attempt (besides claims whose lease expired).
OPEN_STATUSES = (DeliveryStatus.pending.value, DeliveryStatus.deferred.value)
#: Deliveries a send has not finished: open, or held by a running send.
UNFINISHED_STATUSES = (*OPEN_STATUSES, DeliveryStatus.claimed.value)
#: Final states: a delivery in one is never sent again (unless an operator retries it).
FINAL_STATUSES = tuple(
    s.value
    for s in (
        DeliveryStatus.sent,
        DeliveryStatus.queued,
        DeliveryStatus.failed,
        DeliveryStatus.unknown,
        DeliveryStatus.skipped,
    )
)
#: The troubled states the console lists (the partial index ``ix_delivery_trouble``).
TROUBLE_STATUSES = tuple(
    s.value for s in (DeliveryStatus.failed, DeliveryStatus.deferred, DeliveryStatus.unknown)
)


def sql_list(values: tuple[str, ...] | list[str]) -> str:
    """``'a', 'b'``: enum values written into SQL text as literals (the statement's text stays
    the same on every call; a partial index's predicate must be matched literally)."""
    if not all(v.isidentifier() for v in values):  # enum values, never input
        raise ValueError(f"not a state name: {values!r}")
    return ", ".join(f"'{v}'" for v in values)


class SubscriptionStatus(enum.StrEnum):
    active = "active"
    pending = "pending"
    unsubscribed = "unsubscribed"


class Newsletter(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=120, unique=True)
    name: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    item_cap: int = Field(default=8)
    site_url: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: "Name <address>" for this newsletter's mail; None: NEWSLETTER_FROM.
    from_address: str | None = Field(default=None, max_length=320)
    #: Who writes its suggestions (the schedule file's ``writer``); None: NEWSLETTER_WRITER.
    writer: str | None = Field(default=None, max_length=16)


class Comparison(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=120, unique=True)
    title: str = Field(max_length=500)
    url: str = Field(max_length=2000)
    published_at: datetime = Field(sa_type=UTCDateTime, index=True)
    question: str = Field(max_length=500)
    intro: str | None = Field(default=None, sa_type=Text)
    #: An editor's own call on the comparison; shown in full instead of the computed one.
    verdict: str | None = Field(default=None, max_length=280)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Tool(SQLModel, table=True):
    """One side of a comparison (position 0 or 1)."""

    __table_args__ = (UniqueConstraint("comparison_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True, ondelete="CASCADE")
    position: int
    name: str = Field(max_length=300)
    category: str = Field(max_length=120)
    tagline: str = Field(max_length=500)
    description: str = Field(sa_type=Text)
    entry_price: str = Field(max_length=120)
    editor_summary: str | None = Field(default=None, sa_type=Text)
    votes_up: int | None = None
    votes_down: int | None = None


class Review(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    tool_id: int = Field(foreign_key="tool.id", index=True, ondelete="CASCADE")
    position: int
    lens: str = Field(max_length=40)
    verdict: str = Field(max_length=8)
    quote: str = Field(sa_type=Text)


class Subscriber(SQLModel, table=True):
    """A person. ``email_key`` is the lower-cased address that dedupes case-insensitively.

    ``suppressed`` names why nobody may mail this address again (bounced, complained,
    unsubscribed_all); an import never clears it.
    """

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    email_key: str = Field(max_length=320, unique=True)
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    suppressed: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: Soft bounces in a row since the last delivery; at the threshold the address is suppressed.
    soft_bounces: int = 0
    #: When the last double opt-in email went out: at most one per address per hour.
    confirm_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    #: Confirmation emails since ``confirm_window_at``: at most ``confirm_limit`` a week, so
    #: a stranger can't make the form mail one person every hour forever.
    confirm_count: int = 0
    confirm_window_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Subscription(SQLModel, table=True):
    """One subscriber on one newsletter, with its own status."""

    __table_args__ = (
        UniqueConstraint("subscriber_id", "newsletter_id"),
        Index("ix_subscription_audience", "newsletter_id", "status", "subscriber_id"),
        # Finds the pending signups nobody confirmed in time (they hold personal data).
        Index("ix_subscription_pending_age", "status", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", ondelete="CASCADE")
    newsletter_id: int = Field(foreign_key="newsletter.id", ondelete="CASCADE")
    status: str = Field(default=SubscriptionStatus.active.value, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Edition(SQLModel, table=True):
    """One mailing of a newsletter for one period (its local week)."""

    __table_args__ = (UniqueConstraint("newsletter_id", "period_key"),)

    id: int | None = Field(default=None, primary_key=True)
    newsletter_id: int = Field(foreign_key="newsletter.id", index=True)
    period_key: str = Field(max_length=16)
    period_start: datetime = Field(sa_type=UTCDateTime)
    period_end: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default=EditionStatus.draft.value, max_length=16)
    subject: str = Field(max_length=300)
    preheader: str = Field(default="", max_length=300)
    more_count: int = 0
    #: An editor's subject for this edition; a refresh of the draft keeps it.
    custom_subject: str | None = Field(default=None, max_length=300)
    #: The comparisons past the cap, as JSON [{"title": ..., "url": ...}], named in the email.
    more_links: str | None = Field(default=None, sa_type=Text)
    #: An editor's words for this edition, under the greeting.
    intro: str | None = Field(default=None, sa_type=Text)
    #: Comparison ids an editor dropped (JSON list): a refresh of the draft leaves them out.
    dropped: str | None = Field(default=None, sa_type=Text)
    #: An editor's changes for this edition only (JSON): {"preheader": "...", "verdicts":
    #: {"<comparison id>": "the call in their words"}}; a refresh keeps them.
    overrides: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    send_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Why the edition is paused or cancelled (an operator's word or the error budget's).
    status_reason: str | None = Field(default=None, max_length=500)
    #: The reputation counts when an operator resumed a send the breaker had paused
    #: ("attempted,accepted,hard,complaints"): from then on the breaker judges what comes after.
    breaker_baseline: str | None = Field(default=None, max_length=100)
    #: The scheduled send time this edition is for (None: drafted by hand).
    scheduled_for: datetime | None = Field(default=None, sa_type=UTCDateTime)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    approved_by: str | None = Field(default=None, max_length=200)
    #: When the editors were told the edition waits for approval (once per edition).
    alerted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EditionItem(SQLModel, table=True):
    """Which comparisons an edition carries, in order.

    Not in the suggested table list: selection needs to know what earlier editions carried.
    ``live`` is true while the edition is not cancelled; the partial unique index makes the
    database refuse one comparison in two live editions of one newsletter, whatever path
    drafted them and however they raced (a cancel frees them: ``live`` becomes false).
    """

    __table_args__ = (
        UniqueConstraint("edition_id", "comparison_id"),
        Index(
            "uq_editionitem_live_comparison",
            "newsletter_id",
            "comparison_id",
            unique=True,
            sqlite_where=text("live"),
            postgresql_where=text("live"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    position: int
    #: The edition's newsletter, copied here so the unique index can span its editions.
    newsletter_id: int = Field(foreign_key="newsletter.id")
    live: bool = True
    #: An editor pinned it: a refresh of the draft keeps it, at this position, past the cap.
    pinned: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    #: The comparison's content when the draft was made, refreshed or approved
    #: (:func:`newsletter.edition.content.fingerprint`): what an editor saw, to tell edits since.
    fingerprint: str | None = Field(default=None, max_length=64)


#: The rows :data:`Delivery`'s partial index ``ix_delivery_trouble`` holds; a query must say
#: exactly this for the planner to use it.
TROUBLE_PREDICATE = f"status IN ({sql_list(TROUBLE_STATUSES)})"


class Delivery(SQLModel, table=True):
    """One recipient of one edition. The unique key is what makes a send never mail twice."""

    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        # Keyset pagination walks (edition_id, id) and reads status from the index: O(batch)
        # per page. With status second, SQLite merged both open statuses and sorted every
        # remaining row on each page (O(N^2) over a send: 100k took 20 s, now 8 s).
        Index("ix_delivery_edition_keyset", "edition_id", "id", "status"),
        # The latest troubles of an edition (the console's send page): a partial index holds
        # only failed, deferred and unknown rows, so finding five among a million sent ones
        # reads five entries, and a send that goes well never writes to it.
        Index(
            "ix_delivery_trouble",
            "edition_id",
            "updated_at",
            "id",
            postgresql_where=text(TROUBLE_PREDICATE),
            sqlite_where=text(TROUBLE_PREDICATE),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Edition and subscriber ids without database foreign keys (migration 0022): the start of
    # a send inserts a million of these rows in one statement, and the keys' per-row checks
    # were more than half of its time. The engine is their only writer and keeps what the keys
    # guarded (see ``ledger.open_deliveries`` and ``subscriptions``' clean-up of sign-ups).
    edition_id: int
    subscriber_id: int = Field(index=True)
    status: str = Field(default=DeliveryStatus.pending.value, max_length=16)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: A deferred delivery is not claimed again before this (exponential backoff).
    retry_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    message_id: str | None = Field(default=None, max_length=250)
    provider_message_id: str | None = Field(default=None, max_length=250, index=True)
    error_code: int | None = None
    error_text: str | None = Field(default=None, max_length=1000)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SubscriptionEvent(SQLModel, table=True):
    """Every change of a subscription, attributed to the edition whose link caused it."""

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    newsletter_id: int | None = Field(default=None, foreign_key="newsletter.id")
    edition_id: int | None = Field(default=None, foreign_key="edition.id", index=True)
    kind: str = Field(max_length=32)
    source: str = Field(max_length=32)
    detail: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MailEventKind(enum.StrEnum):
    """What a provider reported about a message after it was accepted (webhooks)."""

    delivered = "delivered"
    bounced_hard = "bounced_hard"
    bounced_soft = "bounced_soft"
    complained = "complained"
    blocked = "blocked"  # refused for a reason that is not the address's (see webhooks)


class MailEvent(SQLModel, table=True):
    """One provider report (bounce, complaint, delivery), tied to the delivery it is about.

    ``(provider, provider_event_id)`` is unique, so a webhook the provider retries is stored
    and acted on once.
    """

    __table_args__ = (UniqueConstraint("provider", "provider_event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    provider_event_id: str = Field(max_length=250)
    kind: str = Field(max_length=16)
    email_key: str = Field(max_length=320, index=True)
    subscriber_id: int | None = Field(default=None, foreign_key="subscriber.id", index=True)
    # Indexed (migration 0023): deleting a delivery (a prune) looks here for reports still
    # pointing at it, a scan of every report per deleted row without the index.
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", index=True)
    edition_id: int | None = Field(default=None, foreign_key="edition.id", index=True)
    detail: str | None = Field(default=None, max_length=500)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Schedule(SQLModel, table=True):
    """When a newsletter goes out, loaded from ``schedules/<slug>.toml`` by ``schedule sync``.

    ``paused`` is the operator's switch and survives a sync; everything else comes from the file.
    """

    id: int | None = Field(default=None, primary_key=True)
    newsletter_id: int = Field(foreign_key="newsletter.id", unique=True, ondelete="CASCADE")
    weekday: int  # 0 = Monday
    send_time: str = Field(max_length=5)  # "09:00", local wall-clock time
    timezone: str = Field(max_length=64)
    draft_lead_minutes: int = 180
    approval_required: bool = False
    local_time: bool = False  # deliver at send_time in each subscriber's own zone
    editors: str = Field(default="", max_length=2000)  # comma-separated addresses
    paused: bool = False
    source: str = Field(default="", max_length=500)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ScheduleSkip(SQLModel, table=True):
    """A period an operator chose not to send (``schedule skip SLUG --period 2026-W49``)."""

    __table_args__ = (UniqueConstraint("newsletter_id", "period_key"),)

    id: int | None = Field(default=None, primary_key=True)
    newsletter_id: int = Field(foreign_key="newsletter.id", ondelete="CASCADE")
    period_key: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RateBucket(SQLModel, table=True):
    """The rate limit state of one edition's send, shared by every sender on every machine.

    Updated with a compare-and-set on ``version``, so concurrent senders never both spend the
    same tokens, without row locks (SQLite has none).
    """

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    tokens: float = 0.0
    refilled_at: float = 0.0  # epoch seconds
    hour_start: float = 0.0
    hour_used: int = 0
    version: int = 0


class EditionTotals(SQLModel, table=True):
    """An edition's delivery counts by state, kept when its delivery rows are pruned
    (``newsletter ledger prune``): the figures outlive the rows (52M a year for a weekly
    1M-subscriber list). ``counts`` is JSON, ``{"sent": 999990, "failed": 10, ...}``."""

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    counts: str = Field(max_length=2000)
    pruned_rows: int = 0
    pruned_at: datetime = Field(sa_type=UTCDateTime)

    @property
    def by_state(self) -> dict[str, int]:
        """``counts`` read: delivery state -> rows pruned in it."""
        return {state: int(n) for state, n in json.loads(self.counts).items()}


class DeliveryTally(SQLModel, table=True):
    """How many of an edition's delivery rows are in each state, kept by the database itself:
    triggers on ``delivery`` (migration 0020) add every inserted row, move every changed
    status and take every deleted row away, in the statement that does it. So the counts of
    an edition being sent are a sum over a few rows instead of a count over a million (200 ms
    each on PostgreSQL, read by ``stats``, ``edition status``, the console's progress and the
    reputation breaker at every report), and no code path can forget them.

    ``shard`` is the PostgreSQL backend that wrote the change (``pg_backend_pid()``; 0 on
    SQLite, which has one writer at a time): concurrent senders then never wait on, or
    deadlock over, one counter row. A count is the sum over shards; ``n`` of one shard can be
    negative (a row inserted by one backend and sent by another)."""

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    shard: int = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)
    n: int = Field(default=0, sa_type=BigInteger)


class DeliveryPulse(SQLModel, table=True):
    """How many of an edition's deliveries were accepted (became sent or queued) in each
    second, by their ``updated_at`` (the time the sender recorded the answer: the engine's
    clock, not the database's). Kept by the same triggers as :class:`DeliveryTally`, with
    the same ``shard``; the console's send rate over the last minute is a sum of 60 of these
    instead of a scan of the edition's million rows (300 ms at 52M delivery rows).
    Removed when the edition finishes (:func:`newsletter.sending.ledger.settle`)."""

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    second: int = Field(primary_key=True, sa_type=BigInteger)  # Unix seconds
    shard: int = Field(primary_key=True)
    n: int = Field(default=0, sa_type=BigInteger)


class EditionReport(SQLModel, table=True):
    """People per edition and report kind, each person once, kept by triggers on the event
    tables (migration 0021) as reports arrive: ``what`` is a :class:`MailEventKind`,
    ``bounced`` (hard or soft), ``unsubscribed`` (through the edition's links) or
    ``unsubscribed:<source>``. Read by ``stats`` and the reputation breaker instead of
    counting the events (providers report a delivery per message: as many events as
    deliveries). ``shard`` as in :class:`DeliveryTally`."""

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    what: str = Field(primary_key=True, max_length=64)
    shard: int = Field(primary_key=True)
    n: int = Field(default=0, sa_type=BigInteger)


class EditionCounts(SQLModel, table=True):
    """An edition's delivery counts by state (pruned rows included), taken once when it
    finished sending: after that its rows only change if an operator re-queues failed ones
    (``retry-failed``, which deletes this row), so reports read these instead of counting a
    million rows per edition again. ``counts`` is JSON like :attr:`EditionTotals.counts`."""

    edition_id: int = Field(primary_key=True, foreign_key="edition.id", ondelete="CASCADE")
    counts: str = Field(max_length=2000)
    settled_at: datetime = Field(sa_type=UTCDateTime)

    @property
    def by_state(self) -> dict[str, int]:
        """``counts`` read: delivery state -> deliveries in it."""
        return {state: int(n) for state, n in json.loads(self.counts).items()}


class SendWindow(SQLModel, table=True):
    """What went to one receiving domain (``d:gmail.com``) in the current minute, or out in
    all on one UTC day (``day:2026-12-03``, the warm-up cap), shared by every sender of every
    edition: receiving servers judge the sending IP and domain, not the edition.

    ``backoff_until`` holds a domain that answered 421/451 back without slowing the others;
    ``backoff_step`` doubles the wait while it keeps answering so. Updated with a
    compare-and-set on ``version`` (see :mod:`newsletter.sending.domainrate`).
    """

    key: str = Field(primary_key=True, max_length=300)  # "d:" + a domain of up to 253
    window_start: float = 0.0  # epoch seconds
    used: int = 0
    backoff_until: float = 0.0  # epoch seconds; 0: none
    backoff_step: int = 0
    version: int = 0


class EditionEvent(SQLModel, table=True):
    """One step in an edition's life and who took it: approved, started, paused, resumed,
    cancelled, retried, sent. The edition row keeps only its latest reason; this keeps all of
    them, for the operator asking "who paused this, and when?"."""

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    action: str = Field(max_length=32)
    #: "cli (user)", "EMAIL (console)", "scheduler", "engine" (error budget, backend failure, done).
    actor: str = Field(max_length=200)
    detail: str | None = Field(default=None, max_length=500)


class WebhookNonce(SQLModel, table=True):
    """A webhook signature token already accepted, kept for as long as its signature is valid.

    Mailgun signs only ``timestamp + token``, not the event: without this, one captured genuine
    request could be re-posted within its 10 minutes with any event in it (a complaint for any
    address). A token is accepted once; the row is deleted after it expires."""

    __table_args__ = (UniqueConstraint("provider", "token"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    token: str = Field(max_length=200)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class Role(enum.StrEnum):
    """What a console user may do: editors shape and approve drafts, operators run sends,
    schedules and subscribers, admins do everything and manage users."""

    editor = "editor"
    operator = "operator"
    admin = "admin"


class User(SQLModel, table=True):
    """A console account. ``password_hash`` (argon2id) is None until the person follows
    their one-time set-password link."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    role: str = Field(max_length=16)
    password_hash: str | None = Field(default=None, max_length=200)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored,
    so a copy of the database opens no session. ``csrf`` is the form token of this session."""

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    seen_at: datetime = Field(sa_type=UTCDateTime)


class PasswordLink(SQLModel, table=True):
    """A one-time set-password link (SHA-256 of its token): used once, expires."""

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditEvent(SQLModel, table=True):
    """Who changed what, when, from the console or the CLI (with before and after, as JSON,
    where a change has them)."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=320)
    action: str = Field(max_length=64, index=True)
    target: str = Field(max_length=200, index=True)
    detail: str | None = Field(default=None, sa_type=Text)


class WriterCall(SQLModel):
    """What one writer call produced and used (the columns a verdict suggestion and an intro
    suggestion share): a refusal (the answer failed its check) is kept too, with its reason:
    asking again would pay for the same answer."""

    #: What the writer was given (``content.fingerprint`` of a comparison; for an intro, of
    #: the edition's calls), so the same input is never paid for twice.
    fingerprint: str = Field(max_length=64)
    writer: str = Field(max_length=16)
    model: str = Field(max_length=120)
    refusal: str | None = Field(default=None, sa_type=Text)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float | None = None
    provider: str | None = Field(default=None, max_length=40)
    latency_ms: int = 0
    created_at: datetime = Field(sa_type=UTCDateTime)


class Suggestion(WriterCall, table=True):
    """A verdict a writer suggested for one comparison as its content then was (one row per
    comparison content, writer and model)."""

    __table_args__ = (UniqueConstraint("comparison_id", "fingerprint", "writer", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True, ondelete="CASCADE")
    #: The grounded verdict (``WrittenVerdict`` as JSON), or None with ``refusal``.
    verdict: str | None = Field(default=None, sa_type=Text)


class IntroSuggestion(WriterCall, table=True):
    """The week's intro a writer suggested for one edition, from the edition's calls as they
    then were (one row per edition, input, writer and model)."""

    __table_args__ = (UniqueConstraint("edition_id", "fingerprint", "writer", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    #: The checked intro, or None with ``refusal``.
    text: str | None = Field(default=None, sa_type=Text)


#: ``Subscriber.suppressed`` of a person erased on request (see :mod:`newsletter.audience.privacy`).
ERASED = "erased"


def erased_key(email_key: str) -> str:
    """What an erased address is kept as: enough to recognise it, not to read it. Here, with
    the schema, because the store and bulk imports check it too."""
    return "erased:" + hashlib.sha256(email_key.encode("utf-8")).hexdigest()
