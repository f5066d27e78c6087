"""Every query the engine runs, except the delivery ledger's (see ``ledger.py``).

Functions take the session and keyword-only arguments and never commit: the caller decides
where a transaction ends, so an import can be all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter.edition.content import ComparisonData, ReviewData, ToolData, Votes
from newsletter.edition.lifecycle import MOVES
from newsletter.errors import NewsletterError
from newsletter.storage.models import (
    UNFINISHED_STATUSES,
    Comparison,
    Delivery,
    Edition,
    EditionEvent,
    EditionItem,
    EditionStatus,
    Newsletter,
    Review,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    Tool,
    WebhookNonce,
    erased_key,
    utcnow,
)

#: The longest reason an edition's status keeps (its column's size).
MAX_REASON = 500


class NotFound(NewsletterError, LookupError):
    """A record asked for by id or slug does not exist."""


# --- newsletters ---------------------------------------------------------------------------


def get_newsletter(session: Session, *, slug: str) -> Newsletter:
    found = session.exec(select(Newsletter).where(Newsletter.slug == slug)).first()
    if found is None:
        raise NotFound(f"newsletter {slug!r} does not exist")
    return found


def ensure_newsletter(
    session: Session, *, slug: str, name: str, timezone: str, site_url: str, item_cap: int
) -> Newsletter:
    """The newsletter with ``slug``, created with these values if it is missing."""
    found = session.exec(select(Newsletter).where(Newsletter.slug == slug)).first()
    if found is not None:
        return found
    newsletter = Newsletter(
        slug=slug, name=name, timezone=timezone, site_url=site_url, item_cap=item_cap
    )
    session.add(newsletter)
    session.flush()
    return newsletter


def newsletters_by_slug(session: Session) -> dict[str, Newsletter]:
    return {n.slug: n for n in session.exec(select(Newsletter))}


# --- comparisons ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpsertReport:
    created: int
    updated: int
    unchanged: int


def upsert_comparisons(session: Session, *, records: Sequence[ComparisonData]) -> UpsertReport:
    """Insert or replace comparisons by slug; a record equal to what is stored writes nothing."""
    existing = {
        c.slug: c
        for c in session.exec(
            select(Comparison).where(col(Comparison.slug).in_([r.slug for r in records]))
        )
    }
    created = updated = unchanged = 0
    for record in records:
        row = existing.get(record.slug)
        if row is None:
            row = Comparison.model_validate(_comparison_columns(record))
            session.add(row)
            session.flush()
            created += 1
        elif _load(session, row).model_dump() == record.model_dump():  # id is excluded
            unchanged += 1
            continue
        else:
            for key, value in _comparison_columns(record).items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.execute(delete(Tool).where(col(Tool.comparison_id) == row.id))
            updated += 1
        assert row.id is not None
        _insert_tools(session, comparison_id=row.id, tools=record.tools)
    session.flush()
    return UpsertReport(created=created, updated=updated, unchanged=unchanged)


def _comparison_columns(record: ComparisonData) -> dict[str, object]:
    return {
        "slug": record.slug,
        "title": record.title,
        "url": record.url,
        "published_at": record.published_at,
        "question": record.question,
        "intro": record.intro,
        "verdict": record.verdict,
    }


def _insert_tools(session: Session, *, comparison_id: int, tools: Sequence[ToolData]) -> None:
    for position, tool in enumerate(tools):
        row = Tool(
            comparison_id=comparison_id,
            position=position,
            name=tool.name,
            category=tool.category,
            tagline=tool.tagline,
            description=tool.description,
            entry_price=tool.entry_price,
            editor_summary=tool.editor_summary,
            votes_up=tool.community.up if tool.community else None,
            votes_down=tool.community.down if tool.community else None,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        session.add_all(
            Review(tool_id=row.id, position=i, lens=r.lens, verdict=r.verdict, quote=r.quote)
            for i, r in enumerate(tool.reviews)
        )


def _load(session: Session, row: Comparison) -> ComparisonData:
    return _load_many(session, [row])[0]


def _load_many(session: Session, rows: Sequence[Comparison]) -> list[ComparisonData]:
    """Comparisons with their tools and reviews, in three queries whatever the count."""
    ids = [r.id for r in rows]
    tools = session.exec(
        select(Tool).where(col(Tool.comparison_id).in_(ids)).order_by(col(Tool.position))
    ).all()
    reviews = session.exec(
        select(Review)
        .where(col(Review.tool_id).in_([t.id for t in tools]))
        .order_by(col(Review.position))
    ).all()
    reviews_by_tool: dict[int, list[ReviewData]] = {}
    for r in reviews:
        reviews_by_tool.setdefault(r.tool_id, []).append(
            ReviewData(lens=r.lens, verdict=r.verdict, quote=r.quote)
        )
    tools_by_comparison: dict[int, list[ToolData]] = {}
    for t in tools:
        votes = (
            Votes(up=t.votes_up, down=t.votes_down)
            if t.votes_up is not None and t.votes_down is not None
            else None
        )
        tools_by_comparison.setdefault(t.comparison_id, []).append(
            ToolData(
                name=t.name,
                category=t.category,
                tagline=t.tagline,
                description=t.description,
                entry_price=t.entry_price,
                editor_summary=t.editor_summary,
                community=votes,
                reviews=reviews_by_tool.get(t.id or 0, []),
            )
        )
    return [
        ComparisonData(
            id=r.id,
            slug=r.slug,
            title=r.title,
            url=r.url,
            published_at=r.published_at,
            question=r.question,
            intro=r.intro,
            verdict=r.verdict,
            tools=tools_by_comparison.get(r.id or 0, []),
        )
        for r in rows
    ]


def get_comparison(session: Session, *, slug: str) -> ComparisonData:
    row = session.exec(select(Comparison).where(Comparison.slug == slug)).first()
    if row is None:
        raise NotFound(f"comparison {slug!r} does not exist")
    return _load(session, row)


def comparisons_published_between(
    session: Session, *, start: datetime, end: datetime
) -> list[ComparisonData]:
    """Comparisons with ``start <= published_at < end``, newest first."""
    rows = session.exec(
        select(Comparison)
        .where(Comparison.published_at >= start, Comparison.published_at < end)
        .order_by(col(Comparison.published_at).desc(), col(Comparison.id).desc())
    ).all()
    return _load_many(session, rows)


def comparison_ids_taken(
    session: Session, *, newsletter_id: int, exclude_edition_id: int | None
) -> dict[int, int]:
    """Comparisons held by another live edition of this newsletter (a draft included: the
    database refuses one comparison in two live editions), with that edition's id."""
    query = select(EditionItem.comparison_id, EditionItem.edition_id).where(
        EditionItem.newsletter_id == newsletter_id, col(EditionItem.live)
    )
    if exclude_edition_id is not None:
        query = query.where(EditionItem.edition_id != exclude_edition_id)
    return dict(session.exec(query).all())


# --- editions ------------------------------------------------------------------------------


def get_edition(session: Session, *, edition_id: int) -> Edition:
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise NotFound(f"edition {edition_id} does not exist")
    return edition


def edition_status(session: Session, *, edition_id: int) -> str:
    """The edition's status, read fresh from the database (not from the session's cache)."""
    status = session.exec(select(Edition.status).where(Edition.id == edition_id)).first()
    if status is None:
        raise NotFound(f"edition {edition_id} does not exist")
    return status


def transition(
    session: Session,
    *,
    edition_id: int,
    action: str,
    reason: str | None = None,
    actor: str = "engine",
    now: datetime | None = None,
    detail: str | None = None,
    approved_only: bool = False,
    record: bool = True,
) -> bool:
    """Move the edition by ``action`` (see :data:`newsletter.edition.lifecycle.MOVES`) if, and only
    if, it is in one of that move's source states *in the database now*: one conditional
    UPDATE, so of two racing changes the second sees the first. Returns whether it moved; on
    a move, writes the history event and, for a cancel, frees the edition's comparisons. The
    caller commits (and explains a refusal with :func:`newsletter.edition.lifecycle.refusal`).
    ``approved_only`` also requires an approval in the same UPDATE (a withdrawal wins);
    ``record=False`` leaves the history event to the caller (it knows the detail only later)."""
    move = MOVES[action]
    # The column holds 500: a longer reason must never make the move itself fail.
    values: dict[str, object] = {
        "status": move.target.value,
        "status_reason": reason[:MAX_REASON] if reason else reason,
    }
    if action == "start" and now is not None:
        values["send_started_at"] = now
    if action == "finish" and now is not None:
        values["sent_at"] = now
    query = update(Edition).where(
        col(Edition.id) == edition_id, col(Edition.status).in_([s.value for s in move.sources])
    )
    if approved_only:
        query = query.where(col(Edition.approved_at).is_not(None))
    if action == "finish":
        # Sent only when nothing is open, checked in the same statement: a retry that
        # re-queued deliveries a moment ago keeps the edition sending.
        query = query.where(
            ~exists().where(
                col(Delivery.edition_id) == edition_id,
                col(Delivery.status).in_(UNFINISHED_STATUSES),
            )
        )
    moved = session.execute(query.values(**values))
    if getattr(moved, "rowcount", 0) != 1:
        return False
    if move.target == EditionStatus.cancelled:
        release_edition_items(session, edition_id=edition_id)
    if record:
        add_edition_event(
            session, edition_id=edition_id, action=move.event, actor=actor, detail=detail or reason
        )
    return True


def add_edition_event(
    session: Session, *, edition_id: int, action: str, actor: str, detail: str | None = None
) -> None:
    session.add(
        EditionEvent(
            edition_id=edition_id,
            action=action[:32],
            actor=actor[:200],
            detail=detail[:500] if detail else None,
        )
    )


def edition_events(session: Session, *, edition_id: int, limit: int = 10) -> list[EditionEvent]:
    """The edition's latest events, newest first."""
    return list(
        session.exec(
            select(EditionEvent)
            .where(EditionEvent.edition_id == edition_id)
            .order_by(col(EditionEvent.id).desc())
            .limit(limit)
        ).all()
    )


def drafts_due(
    session: Session, *, newsletter_id: int, now: datetime, grace: timedelta
) -> list[Edition]:
    """The newsletter's drafts whose own send time has come: at or before ``now``, and
    approved, or due less than ``grace`` ago (the scheduler's late approvals and moved
    sends)."""
    return list(
        session.exec(
            select(Edition).where(
                Edition.newsletter_id == newsletter_id,
                Edition.status == EditionStatus.draft,
                col(Edition.scheduled_for).is_not(None),
                col(Edition.scheduled_for) <= now,
                col(Edition.approved_at).is_not(None) | (col(Edition.scheduled_for) >= now - grace),
            )
        ).all()
    )


def find_edition(session: Session, *, newsletter_id: int, period_key: str) -> Edition | None:
    return session.exec(
        select(Edition).where(
            Edition.newsletter_id == newsletter_id, Edition.period_key == period_key
        )
    ).first()


def set_breaker_baseline(
    session: Session, *, edition_id: int, baseline: tuple[int, int, int, int]
) -> None:
    """Remember the reputation counts at a resume (see :mod:`newsletter.sending.reputation`)."""
    session.execute(
        update(Edition)
        .where(col(Edition.id) == edition_id)
        .values(breaker_baseline=",".join(str(n) for n in baseline))
    )


def set_approval(
    session: Session, *, edition_id: int, approved_at: datetime | None, by: str | None
) -> bool:
    """Approve a draft (``approved_at`` given) or withdraw its approval (None): a conditional
    UPDATE, so a draft that started or was cancelled meanwhile is refused, not changed after
    the fact, and only an approved draft's approval is withdrawn. Whether it changed."""
    query = update(Edition).where(
        col(Edition.id) == edition_id, col(Edition.status) == EditionStatus.draft
    )
    if approved_at is None:
        query = query.where(col(Edition.approved_at).is_not(None))
    changed = session.execute(
        query.values(approved_at=approved_at, approved_by=by[:200] if by else None)
    )
    return getattr(changed, "rowcount", 0) == 1


def claim_alert(session: Session, *, edition_id: int, now: datetime) -> bool:
    """Mark the editors' approval alert as sent, once: True only for the caller that did
    (two schedulers drafting at once send one alert)."""
    claimed = session.execute(
        update(Edition)
        .where(col(Edition.id) == edition_id, col(Edition.alerted_at).is_(None))
        .values(alerted_at=now)
    )
    return getattr(claimed, "rowcount", 0) == 1


def hold_draft_for_refresh(session: Session, *, edition_id: int) -> bool:
    """Lock a draft that is neither approved nor started for this transaction's refresh (a
    conditional UPDATE: the row lock on PostgreSQL, the write lock on SQLite), so an approval
    can't land between the check and the new content. False when it is no longer such a draft.
    """
    held = session.execute(
        update(Edition)
        .where(
            col(Edition.id) == edition_id,
            col(Edition.status) == EditionStatus.draft,
            col(Edition.approved_at).is_(None),
        )
        .values(status=EditionStatus.draft.value)
    )
    return getattr(held, "rowcount", 0) == 1


def set_edition_items(
    session: Session,
    *,
    edition_id: int,
    newsletter_id: int,
    comparison_ids: Iterable[int],
    pinned: Collection[int] = (),
    fingerprints: Mapping[int, str | None] | None = None,
) -> None:
    """Replace a draft's items, in order, with which are pinned and the content fingerprint
    each was seen with. The flush raises ``IntegrityError`` when another live edition of the
    newsletter holds one of them (the unique index decided: a concurrent draft won); the
    caller rolls back and explains with :func:`comparison_ids_taken`."""
    fingerprints = fingerprints or {}
    session.execute(delete(EditionItem).where(col(EditionItem.edition_id) == edition_id))
    session.add_all(
        EditionItem(
            edition_id=edition_id,
            newsletter_id=newsletter_id,
            comparison_id=cid,
            position=i,
            pinned=cid in pinned,
            fingerprint=fingerprints.get(cid),
        )
        for i, cid in enumerate(comparison_ids)
    )
    session.flush()


def edition_item_rows(session: Session, *, edition_id: int) -> list[EditionItem]:
    """A draft's item rows in order (pins and fingerprints), for reshaping it."""
    return list(
        session.exec(
            select(EditionItem)
            .where(EditionItem.edition_id == edition_id)
            .order_by(col(EditionItem.position))
        ).all()
    )


def set_item_fingerprints(
    session: Session, *, edition_id: int, fingerprints: Mapping[int, str]
) -> None:
    """Record the content each item is seen (or approved) with."""
    for row in edition_item_rows(session, edition_id=edition_id):
        if row.comparison_id in fingerprints:
            row.fingerprint = fingerprints[row.comparison_id]
    session.flush()


def release_edition_items(session: Session, *, edition_id: int) -> None:
    """A cancelled edition frees its comparisons for the next edition (history stays)."""
    session.execute(
        update(EditionItem).where(col(EditionItem.edition_id) == edition_id).values(live=False)
    )


def edition_comparisons(session: Session, *, edition_id: int) -> list[ComparisonData]:
    rows = session.exec(
        select(Comparison)
        .join(EditionItem, col(EditionItem.comparison_id) == Comparison.id)
        .where(EditionItem.edition_id == edition_id)
        .order_by(col(EditionItem.position))
    ).all()
    return _load_many(session, rows)


# --- subscribers ---------------------------------------------------------------------------


def subscribers_by_key(session: Session, *, keys: Sequence[str]) -> dict[str, Subscriber]:
    """The subscribers with these keys; an erased person is found by the hash of the key
    (:func:`~newsletter.storage.models.erased_key`), so an import never re-adds them."""

    found: dict[str, Subscriber] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        hashed = {erased_key(k): k for k in chunk}
        wanted = [*chunk, *hashed]
        for s in session.exec(select(Subscriber).where(col(Subscriber.email_key).in_(wanted))):
            found[hashed.get(s.email_key, s.email_key)] = s
    return found


def record_event(
    session: Session,
    *,
    subscriber_id: int,
    newsletter_id: int | None,
    kind: str,
    source: str,
    edition_id: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        SubscriptionEvent(
            subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
            edition_id=edition_id,
            kind=kind,
            source=source,
            detail=detail,
        )
    )


def leave_lists(
    session: Session,
    *,
    subscriber_id: int,
    source: str,
    edition_id: int | None = None,
    newsletter_id: int | None = None,
) -> int:
    """Unsubscribe the subscriber from every list they are on (or only ``newsletter_id``),
    with an event each; how many subscriptions changed."""
    subs = session.exec(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status != SubscriptionStatus.unsubscribed,
            *([] if newsletter_id is None else [Subscription.newsletter_id == newsletter_id]),
        )
    ).all()
    for sub in subs:
        set_subscription_status(
            session,
            subscriber_id=subscriber_id,
            newsletter_id=sub.newsletter_id,
            status=SubscriptionStatus.unsubscribed,
            source=source,
            edition_id=edition_id,
        )
    return len(subs)


def set_subscription_status(
    session: Session,
    *,
    subscriber_id: int,
    newsletter_id: int,
    status: str,
    source: str,
    edition_id: int | None = None,
) -> None:
    """Change one subscription and record the event; unknown pairs raise :class:`NotFound`."""
    sub = session.exec(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.newsletter_id == newsletter_id,
        )
    ).first()
    if sub is None:
        raise NotFound(f"subscriber {subscriber_id} is not on newsletter {newsletter_id}")
    if sub.status == status:
        return
    sub.status = status
    sub.updated_at = utcnow()
    kind = {"unsubscribed": "unsubscribed", "active": "resubscribed"}.get(status, status)
    record_event(
        session,
        subscriber_id=subscriber_id,
        newsletter_id=newsletter_id,
        kind=kind,
        source=source,
        edition_id=edition_id,
    )
    session.flush()


def count_active_subscribers(session: Session, *, newsletter_id: int) -> int:
    return session.exec(
        select(func.count())
        .select_from(Subscription)
        .join(Subscriber, col(Subscriber.id) == Subscription.subscriber_id)
        .where(
            Subscription.newsletter_id == newsletter_id,
            Subscription.status == "active",
            col(Subscriber.suppressed).is_(None),
        )
    ).one()


# --- webhook nonces ------------------------------------------------------------------------


def accept_nonce(
    session: Session, *, provider: str, token: str, now: datetime, valid_for: timedelta
) -> bool:
    """Remember a signature token for as long as its signature is valid; False when it was
    seen before (a replayed request). Expired tokens are forgotten here too. The caller
    commits, in the same transaction as whatever the request does, so a request that failed
    leaves its token unused for the provider's retry."""
    session.execute(delete(WebhookNonce).where(col(WebhookNonce.expires_at) < now))
    try:
        with session.begin_nested():
            session.add(
                WebhookNonce(provider=provider, token=token[:200], expires_at=now + valid_for)
            )
    except IntegrityError:
        return False
    return True
