"""The one place where the stages meet: draft, preview and send an edition.

The CLI (and later the scheduler and the web app) call these functions and nothing below them.
Each function takes an open session and commits where a step is complete.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, col

from newsletter import ledger, store
from newsletter.backends import MailBackend
from newsletter.config import Settings
from newsletter.dispatch import SendSummary, dispatch
from newsletter.models import Edition, EditionStatus, Newsletter, utcnow
from newsletter.personalization import EditionIdentity, MessageTemplate, Recipient, instance_tag
from newsletter.rendering import (
    EditionContext,
    RenderedEdition,
    default_preheader,
    default_subject,
    render_edition,
)
from newsletter.selection import Period, Selection, select_comparisons, week_containing
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
    session: Session, *, settings: Settings, newsletter_slug: str | None, at: datetime
) -> DraftOutcome:
    """Create or refresh the draft edition for the period containing ``at``.

    A draft already there is refreshed with the current selection (comparisons published since
    it was drafted are added); an edition that started sending is returned unchanged. Raises
    :class:`EmptyWeek` when the period has nothing new, rather than drafting an empty email.
    """
    newsletter = resolve_newsletter(session, settings, newsletter_slug)
    assert newsletter.id is not None
    if at.tzinfo is None:  # a bare date or time means the newsletter's own clock
        at = at.replace(tzinfo=ZoneInfo(newsletter.timezone))
    period = week_containing(at, newsletter.timezone)
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
        sender=settings.sender(),
        base_url=settings.base_url,
        instance_tag=instance_tag(settings.secret_key or "preview"),
    )
    return rendered, MessageTemplate(rendered, identity), newsletter


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


def send_edition(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    backend: MailBackend,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SendReport:
    """Send an edition to every active subscriber of its newsletter, exactly once each.

    draft -> sending: the audience is fixed (one pending delivery per active subscriber) in the
    same transaction. A send that is run again, or resumed after a crash, only attempts the
    deliveries still pending or deferred (or claimed by a send whose lease expired). When none
    remain the edition becomes ``sent``; ``unknown`` and ``failed`` ones wait for an operator.
    """
    settings.require_sending_ready()
    edition = store.get_edition(session, edition_id=edition_id)
    added = 0
    if edition.status == EditionStatus.draft:
        if not store.edition_comparisons(session, edition_id=edition_id):
            raise EditionStateError(f"edition {edition_id} carries no comparisons")
        # Only one caller moves a draft to sending, even if two start at once.
        moved = session.execute(
            update(Edition)
            .where(col(Edition.id) == edition_id, col(Edition.status) == EditionStatus.draft)
            .values(status=EditionStatus.sending, send_started_at=utcnow())
        )
        if getattr(moved, "rowcount", 0) == 1:
            added = ledger.open_deliveries(
                session, edition_id=edition_id, newsletter_id=edition.newsletter_id
            )
        session.commit()
        session.refresh(edition)
    totals = ledger.counts(session, edition_id=edition_id)
    if edition.status == EditionStatus.sent:
        return SendReport(edition, SendSummary(), totals, 0)
    _, template, newsletter = prepare(session, edition=edition, settings=settings)
    if on_start is not None:
        on_start(totals["pending"] + totals["deferred"] + totals["claimed"])
    run = dispatch(
        session,
        edition_id=edition_id,
        newsletter_id=edition.newsletter_id,
        template=template,
        signer=signer_for(settings),
        backend=backend,
        batch_size=settings.batch_size,
        lease_seconds=settings.lease_seconds,
        on_batch=on_batch,
    )
    totals = ledger.counts(session, edition_id=edition_id)
    if totals["pending"] == 0 and totals["deferred"] == 0 and totals["claimed"] == 0:
        edition.status = EditionStatus.sent
        edition.sent_at = utcnow()
        session.add(edition)
        session.commit()
    return SendReport(edition, run, totals, added)
