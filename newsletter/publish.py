"""The one place where the stages meet: draft, preview and send an edition.

The CLI (and later the scheduler and the web app) call these functions and nothing below them.
Each function takes an open session and commits where a step is complete.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from email.headerregistry import Address
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from newsletter import ledger, store
from newsletter.backends import MailBackend
from newsletter.config import Settings
from newsletter.dispatch import Policy, SendSummary, dispatch
from newsletter.models import Edition, EditionStatus, Newsletter, utcnow
from newsletter.personalization import EditionIdentity, MessageTemplate, Recipient, instance_tag
from newsletter.ratelimit import Limiter, RateSpec
from newsletter.rendering import (
    EditionContext,
    RenderedEdition,
    default_preheader,
    default_subject,
    render_edition,
)
from newsletter.selection import Period, Selection, select_comparisons, week_containing
from newsletter.sharedrate import SharedRateLimiter
from newsletter.tokens import TokenSigner

SAMPLE_RECIPIENT = Recipient(subscriber_id=0, email="reader@example.com", name="Sample Reader")


class EmptyWeek(LookupError):
    """No new comparisons in the period: there is nothing worth mailing."""


class EditionStateError(RuntimeError):
    """The edition is not in a state that allows this action."""


def default_newsletter(session: Session, settings: Settings) -> Newsletter:
    """The configured default newsletter, created from settings on first use."""
    return store.ensure_newsletter(
        session,
        slug=settings.newsletter,
        name=settings.newsletter_name,
        timezone=settings.timezone,
        site_url=settings.site_url,
        item_cap=settings.item_cap,
    )


def resolve_newsletter(session: Session, settings: Settings, slug: str | None) -> Newsletter:
    if slug is None or slug == settings.newsletter:
        return default_newsletter(session, settings)
    return store.get_newsletter(session, slug=slug)


@dataclass(frozen=True, slots=True)
class DraftOutcome:
    edition: Edition
    created: bool
    period: Period
    selection: Selection


def draft_edition(
    session: Session,
    *,
    settings: Settings,
    newsletter_slug: str | None,
    at: datetime,
    period: Period | None = None,
    scheduled_for: datetime | None = None,
) -> DraftOutcome:
    """Create or refresh the draft edition for the period containing ``at`` (or ``period``,
    which the scheduler passes with the send time the edition is for).

    A draft already there is refreshed with the current selection (comparisons published since
    it was drafted are added); an edition that started sending is returned unchanged. Raises
    :class:`EmptyWeek` when the period has nothing new, rather than drafting an empty email.
    """
    newsletter = resolve_newsletter(session, settings, newsletter_slug)
    assert newsletter.id is not None
    if at.tzinfo is None:  # a bare date or time means the newsletter's own clock
        at = at.replace(tzinfo=ZoneInfo(newsletter.timezone))
    period = period or week_containing(at, newsletter.timezone)
    edition = store.find_edition(session, newsletter_id=newsletter.id, period_key=period.key)
    if edition is not None and edition.status != EditionStatus.draft:
        items = store.edition_comparisons(session, edition_id=edition.id or 0)
        return DraftOutcome(edition, False, period, Selection(tuple(items), edition.more_count))
    selection = select_comparisons(
        store.comparisons_published_between(session, start=period.start, end=period.end),
        period=period,
        already_sent=store.comparison_ids_already_sent(
            session,
            newsletter_id=newsletter.id,
            exclude_edition_id=edition.id if edition else None,
        ),
        cap=newsletter.item_cap,
    )
    if selection.empty:
        raise EmptyWeek(
            f"no new comparisons were published in {period.describe()}; nothing to draft"
        )
    subject = default_subject(newsletter.name, selection.items, selection.more_count)
    created = edition is None
    if edition is None:
        edition = Edition(
            newsletter_id=newsletter.id,
            period_key=period.key,
            period_start=period.start,
            period_end=period.end,
            subject=subject,
        )
        session.add(edition)
    edition.subject = subject
    edition.period_start, edition.period_end = period.start, period.end
    edition.scheduled_for = scheduled_for or edition.scheduled_for
    edition.preheader = default_preheader(selection.items)
    edition.more_count = selection.more_count
    session.flush()
    assert edition.id is not None
    store.set_edition_items(
        session, edition_id=edition.id, comparison_ids=[c.id for c in selection.items if c.id]
    )
    session.commit()
    return DraftOutcome(edition, created, period, selection)


def _context(
    session: Session, edition: Edition, settings: Settings
) -> tuple[EditionContext, Newsletter]:
    newsletter = session.get(Newsletter, edition.newsletter_id)
    assert newsletter is not None and edition.id is not None
    items = store.edition_comparisons(session, edition_id=edition.id)
    ctx = EditionContext(
        edition_id=edition.id,
        newsletter_name=newsletter.name,
        period=Period(
            key=edition.period_key,
            start=edition.period_start,
            end=edition.period_end,
            timezone=newsletter.timezone,
        ),
        items=items,
        more_count=edition.more_count,
        subject=edition.subject,
        preheader=edition.preheader,
        web_url=f"{settings.base_url}/archive/{edition.id}",
        more_url=newsletter.site_url,
        site_url=newsletter.site_url,
        postal_address=settings.postal_address,
    )
    return ctx, newsletter


def prepare(
    session: Session, *, edition: Edition, settings: Settings
) -> tuple[RenderedEdition, MessageTemplate, Newsletter]:
    """Render the edition once and build its MIME template."""
    ctx, newsletter = _context(session, edition, settings)
    rendered = render_edition(ctx)
    assert newsletter.id is not None and edition.id is not None
    identity = EditionIdentity(
        edition_id=edition.id,
        newsletter_id=newsletter.id,
        newsletter_slug=newsletter.slug,
        newsletter_name=newsletter.name,
        sender=sender_of(newsletter, settings),
        base_url=settings.base_url,
        instance_tag=instance_tag(settings.secret_key or "preview"),
    )
    return rendered, MessageTemplate(rendered, identity), newsletter


def sender_of(newsletter: Newsletter, settings: Settings) -> Address:
    """The newsletter's own From (its schedule file's ``from``), else ``NEWSLETTER_FROM``."""
    if newsletter.from_address:
        name, addr = parseaddr(newsletter.from_address)
        local, _, domain = addr.rpartition("@")
        return Address(display_name=name, username=local, domain=domain)
    return settings.sender()


def approve_edition(session: Session, *, edition_id: int, by: str) -> Edition:
    """An editor's go-ahead for a schedule that requires one; only a draft can be approved.

    Approving freezes the content: the scheduler sends this draft as it is, without refreshing
    its selection."""
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        raise EditionStateError(
            f"edition {edition_id} is {edition.status}; only a draft is approved"
        )
    edition.approved_at = utcnow()
    edition.approved_by = by[:200]
    session.commit()
    return edition


def signer_for(settings: Settings) -> TokenSigner:
    """Signs with the current key; verifies with it and the old ones (key rotation).

    Previews work without a key (their links are signed with a random throwaway key, so they
    are valid nowhere); sending checks the key first (``require_sending_ready``).
    """
    if not settings.secret_key:
        return TokenSigner([secrets.token_urlsafe(32)])
    return TokenSigner(settings.signing_keys())


def preview_edition(
    session: Session, *, edition_id: int, settings: Settings
) -> tuple[str, str, RenderedEdition]:
    """(html, text, rendered) as the sample recipient would see them."""
    edition = store.get_edition(session, edition_id=edition_id)
    rendered, template, _ = prepare(session, edition=edition, settings=settings)
    page, text = template.preview(SAMPLE_RECIPIENT, signer_for(settings))
    return page, text, rendered


@dataclass(frozen=True, slots=True)
class SendReport:
    edition: Edition
    run: SendSummary
    totals: dict[str, int]
    audience_added: int
    next_retry_at: datetime | None = None


def policy_for(settings: Settings) -> Policy:
    return Policy(
        batch_size=settings.batch_size,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        error_budget=settings.error_budget,
    )


def start_edition(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    local_time: tuple[date, clock_time] | None = None,
) -> int:
    """draft -> sending, fixing the audience: one pending delivery per active subscriber.

    Returns how many deliveries were written (0 if the edition had already started). Workers
    (``newsletter worker``) then send it; ``send`` starts and sends in one go. With
    ``local_time`` (a local date and time), each delivery waits for that time in its
    subscriber's own zone (hourly waves, see ``ledger.schedule_local_waves``).
    """
    settings.require_sending_ready()
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        return 0
    if not store.edition_comparisons(session, edition_id=edition_id):
        raise EditionStateError(f"edition {edition_id} carries no comparisons")
    # Only one caller moves a draft to sending, even if two start at once.
    moved = session.execute(
        update(Edition)
        .where(col(Edition.id) == edition_id, col(Edition.status) == EditionStatus.draft)
        .values(status=EditionStatus.sending, send_started_at=utcnow())
    )
    added = 0
    if getattr(moved, "rowcount", 0) == 1:
        added = ledger.open_deliveries(
            session, edition_id=edition_id, newsletter_id=edition.newsletter_id
        )
        if local_time is not None:
            newsletter = session.get(Newsletter, edition.newsletter_id)
            assert newsletter is not None
            ledger.schedule_local_waves(
                session,
                edition_id=edition_id,
                day=local_time[0],
                at=local_time[1],
                default_timezone=newsletter.timezone,
            )
    session.commit()
    return added


def send_edition(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    backend: MailBackend | None = None,
    make_backend: Callable[[], MailBackend] | None = None,
    concurrency: int = 1,
    wait: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send an edition to every active subscriber of its newsletter, exactly once each.

    Starts a draft (see :func:`start_edition`), then sends what is claimable: pending
    deliveries, deferred ones whose retry time came, and batches whose send died (lease
    expired). ``concurrency`` > 1 runs that many senders in threads, each with its own session
    and its own backend from ``make_backend``. With ``wait`` it keeps going until nothing is
    left (sleeping until the next retry), else one pass. When nothing is left the edition
    becomes ``sent``; ``unknown`` and ``failed`` deliveries wait for an operator.
    """
    settings.require_sending_ready()
    if backend is None and make_backend is None:
        raise ValueError("give a backend or make_backend")
    added = start_edition(session, edition_id=edition_id, settings=settings)
    edition = store.get_edition(session, edition_id=edition_id)
    session.refresh(edition)
    if edition.status == EditionStatus.sent:
        return SendReport(edition, SendSummary(), ledger.counts(session, edition_id=edition_id), 0)
    if edition.status in (EditionStatus.paused, EditionStatus.cancelled):
        raise EditionStateError(
            f"edition {edition_id} is {edition.status}"
            + (f" ({edition.status_reason})" if edition.status_reason else "")
            + ("; `newsletter edition resume` it first" if edition.status == "paused" else "")
        )
    if not wait and not ledger.has_claimable(session, edition_id=edition_id):
        # Nothing due yet (a later local-time wave, a retry not come due): workers and the
        # scheduler look every few seconds, so skip rendering the edition for an empty pass.
        _finish_if_done(session, edition_id=edition_id)
        session.refresh(edition)
        return SendReport(
            edition,
            SendSummary(),
            ledger.counts(session, edition_id=edition_id),
            added,
            ledger.next_retry_at(session, edition_id=edition_id),
        )
    _, template, _ = prepare(session, edition=edition, settings=settings)
    # Shared by every sender of this edition, in this process and in any other.
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    limiter = SharedRateLimiter(engine, edition_id, RateSpec.parse(settings.rate_limit))
    if on_start is not None:
        on_start(ledger.open_count(session, edition_id=edition_id))
    total = SendSummary()
    while True:
        total.merge(
            _one_pass(
                session,
                edition,
                template,
                settings,
                limiter,
                backend,
                make_backend,
                concurrency,
                on_batch,
            )
        )
        if _finish_if_done(session, edition_id=edition_id) or not wait or total.stopped_because:
            break
        due = ledger.next_retry_at(session, edition_id=edition_id)
        pause = 1.0 if due is None else (due - utcnow()).total_seconds()
        sleep(min(max(pause, 0.05), 5.0))  # short naps: a pause still takes effect quickly
    session.refresh(edition)
    return SendReport(
        edition,
        total,
        ledger.counts(session, edition_id=edition_id),
        added,
        ledger.next_retry_at(session, edition_id=edition_id),
    )


def _one_pass(
    session: Session,
    edition: Edition,
    template: MessageTemplate,
    settings: Settings,
    limiter: Limiter,
    backend: MailBackend | None,
    make_backend: Callable[[], MailBackend] | None,
    concurrency: int,
    on_batch: Callable[[int], None] | None,
) -> SendSummary:
    assert edition.id is not None
    signer = signer_for(settings)
    policy = policy_for(settings)

    def run(s: Session, b: MailBackend) -> SendSummary:
        return dispatch(
            s,
            edition_id=edition.id or 0,
            newsletter_id=edition.newsletter_id,
            template=template,
            signer=signer,
            backend=b,
            policy=policy,
            limiter=limiter,
            on_batch=on_batch,
            journal_dir=settings.journal_path(),
        )

    if concurrency <= 1:
        chosen = backend if backend is not None else make_backend()  # type: ignore[misc]
        return run(session, chosen)
    if make_backend is None:
        raise ValueError("concurrency > 1 needs make_backend: one backend per sender")
    engine = session.get_bind()
    results: list[SendSummary] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Session(engine, expire_on_commit=False) as own:
                results.append(run(own, make_backend()))
        except BaseException as exc:  # re-raised below, after every thread stopped
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"sender-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    total = SendSummary()
    for r in results:
        total.merge(r)
    return total


def _finish_if_done(session: Session, *, edition_id: int) -> bool:
    """Mark the edition sent when no delivery is open; True if it is sent."""
    if ledger.open_count(session, edition_id=edition_id):
        return False
    session.execute(
        update(Edition)
        .where(col(Edition.id) == edition_id, col(Edition.status) == EditionStatus.sending)
        .values(status=EditionStatus.sent, sent_at=utcnow())
    )
    session.commit()
    return store.edition_status(session, edition_id=edition_id) == EditionStatus.sent


# --- operator controls -----------------------------------------------------------------------


def pause_edition(
    session: Session, *, edition_id: int, reason: str = "paused by an operator"
) -> None:
    """Stop sending within one batch; resume never re-sends what was sent."""
    _change(session, edition_id, {EditionStatus.sending}, EditionStatus.paused, reason)


def resume_edition(session: Session, *, edition_id: int) -> None:
    _change(session, edition_id, {EditionStatus.paused}, EditionStatus.sending, None)


def cancel_edition(
    session: Session, *, edition_id: int, reason: str = "cancelled by an operator"
) -> None:
    """Nothing more is sent; what was sent stays recorded. A cancelled edition stays cancelled."""
    _change(
        session,
        edition_id,
        {EditionStatus.draft, EditionStatus.sending, EditionStatus.paused},
        EditionStatus.cancelled,
        reason,
    )


def _change(
    session: Session,
    edition_id: int,
    allowed: set[EditionStatus],
    to: EditionStatus,
    reason: str | None,
) -> None:
    current = store.edition_status(session, edition_id=edition_id)
    if current not in allowed:
        raise EditionStateError(
            f"edition {edition_id} is {current}; can't make it {to} "
            f"(only from {', '.join(sorted(allowed))})"
        )
    store.set_edition_status(session, edition_id=edition_id, status=to, reason=reason)
    session.commit()


def retry_failed(
    session: Session, *, edition_id: int, include_unknown: bool = False, code: int | None = None
) -> int:
    """Re-queue failed deliveries an operator chose to retry; a sent edition sends again."""
    count = ledger.retry_failed(
        session, edition_id=edition_id, include_unknown=include_unknown, code=code
    )
    if count and store.edition_status(session, edition_id=edition_id) == EditionStatus.sent:
        store.set_edition_status(session, edition_id=edition_id, status=EditionStatus.sending)
    session.commit()
    return count


def sending_editions(session: Session) -> list[int]:
    """Ids of editions that workers should work on, oldest first."""
    ids = session.exec(
        select(Edition.id).where(Edition.status == EditionStatus.sending).order_by(col(Edition.id))
    ).all()
    return [i for i in ids if i is not None]
