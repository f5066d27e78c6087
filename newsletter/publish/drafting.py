"""An edition's content: draft it from the week's comparisons, render it, preview it.

Drafting is repeatable until the send starts (a refreshed draft picks up comparisons published
since); rendering happens once per edition and per send, never per recipient.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from newsletter.config import Settings
from newsletter.edition.content import ComparisonData, fingerprint
from newsletter.edition.dkim import signer_from
from newsletter.edition.lifecycle import EditionStateError
from newsletter.edition.periods import period_for
from newsletter.edition.personalization import (
    EditionIdentity,
    MessageTemplate,
    Recipient,
    instance_tag,
)
from newsletter.edition.rendering import (
    EditionContext,
    MoreLink,
    RenderedEdition,
    default_preheader,
    default_subject,
    render_edition,
    verdicts_of,
)
from newsletter.edition.selection import Selection, select_comparisons
from newsletter.edition.timing import Period
from newsletter.edition.tokens import TokenSigner
from newsletter.edition.verdicts import ComparisonVerdict, WrittenCall
from newsletter.edition.verp import return_paths
from newsletter.errors import NewsletterError
from newsletter.publish.approval import alert_editors
from newsletter.storage import store
from newsletter.storage.models import Edition, EditionItem, EditionStatus, Newsletter

SAMPLE_RECIPIENT = Recipient(subscriber_id=0, email="reader@example.com", name="Sample Reader")


class EmptyWeek(NewsletterError, LookupError):
    """No new comparisons in the period: there is nothing worth mailing."""


class ComparisonTaken(NewsletterError, RuntimeError):
    """A comparison is already carried by another live edition of the same newsletter."""


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


#: The subject column's length; past :data:`SUBJECT_BUDGET` it is allowed but warned about.
MAX_SUBJECT = 300


@dataclass(frozen=True, slots=True)
class DraftOutcome:
    edition: Edition
    created: bool
    period: Period
    selection: Selection
    #: A refresh of an existing draft: titles of the comparisons it added and removed.
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: Carried before and after, but edited in the store since the draft was last refreshed.
    edited: tuple[str, ...] = ()

    def changes(self) -> str:
        """ "2 added (A; B), 1 removed (C), 1 edited (D)", or "no change" (a refresh shows
        what it did)."""
        parts = [
            f"{len(titles)} {verb} ({'; '.join(titles)})"
            for verb, titles in (
                ("added", self.added),
                ("removed", self.removed),
                ("edited", self.edited),
            )
            if titles
        ]
        return ", ".join(parts) or "no change"


def draft_edition(
    session: Session,
    *,
    settings: Settings,
    newsletter_slug: str | None,
    at: datetime,
    now: datetime | None = None,
    period: Period | None = None,
    scheduled_for: datetime | None = None,
) -> DraftOutcome:
    """Create or refresh the draft edition of the period in play at ``at``, named as every
    path names it (:func:`newsletter.edition.periods.period_for`: with a schedule, the ISO week of
    the send date; without, the local week containing ``at``). The scheduler passes ``period``
    itself, computed by the same module, with the send time the edition is for.

    A draft already there is refreshed with the current selection (comparisons published since
    it was drafted are added); an edition that started sending, or an approved draft (the
    editor approved exactly that content), is returned unchanged. Comparisons held by another
    live edition of the newsletter are left out; if a concurrent draft took one first, the
    database refuses it and :class:`ComparisonTaken` names both. Raises :class:`EmptyWeek` when
    the period has nothing new, rather than drafting an empty email. Editors of a schedule that
    requires approval are alerted now, when the draft is made (``now``, by default ``at``).
    """
    newsletter = resolve_newsletter(session, settings, newsletter_slug)
    assert newsletter.id is not None
    if at.tzinfo is None:  # a bare date or time means the newsletter's own clock
        at = at.replace(tzinfo=ZoneInfo(newsletter.timezone))
    if period is None:
        named = period_for(session, newsletter, at)
        period, scheduled_for = named.period, scheduled_for or named.send_at
    edition = store.find_edition(session, newsletter_id=newsletter.id, period_key=period.key)
    before = (
        {c.id: c.title for c in store.edition_comparisons(session, edition_id=edition.id or 0)}
        if edition is not None
        else {}
    )
    if edition is not None and (
        edition.status != EditionStatus.draft or edition.approved_at is not None
    ):
        items = store.edition_comparisons(session, edition_id=edition.id or 0)
        return DraftOutcome(edition, False, period, Selection(tuple(items), edition.more_count))
    rows = store.edition_item_rows(session, edition_id=edition.id or 0) if edition else []
    selection, pinned = _select(
        session, newsletter, period, rows, edition=edition, cap=newsletter.item_cap
    )
    if selection.empty:
        raise EmptyWeek(
            f"no new comparisons were published in {period.describe()}; nothing to draft"
        )
    subject = default_subject(selection.items, selection.more_count)
    created = edition is None
    if edition is not None and not store.hold_draft_for_refresh(
        session, edition_id=edition.id or 0
    ):
        # Approved or started since it was read: the approved content stands.
        session.rollback()
        session.refresh(edition)
        items = store.edition_comparisons(session, edition_id=edition.id or 0)
        return DraftOutcome(edition, False, period, Selection(tuple(items), edition.more_count))
    if edition is None:
        edition = Edition(
            newsletter_id=newsletter.id,
            period_key=period.key,
            period_start=period.start,
            period_end=period.end,
            subject=subject,
        )
        session.add(edition)
    edition.subject = edition.custom_subject or subject
    edition.period_start, edition.period_end = period.start, period.end
    edition.scheduled_for = scheduled_for or edition.scheduled_for
    edition.preheader = default_preheader(selection.items, edition.subject)
    edition.more_count = selection.more_count
    edition.more_links = json.dumps(
        [{"title": c.title, "url": c.url} for c in selection.more], ensure_ascii=False
    )
    ids = [c.id for c in selection.items if c.id]
    # What the editor sees now is what later edits are told against.
    seen = {r.comparison_id: r.fingerprint for r in rows}
    now_prints = {c.id: fingerprint(c) for c in selection.items if c.id}
    try:
        session.flush()
        assert edition.id is not None
        store.set_edition_items(
            session,
            edition_id=edition.id,
            newsletter_id=newsletter.id,
            comparison_ids=ids,
            pinned=pinned,
            fingerprints=now_prints,
        )
    except IntegrityError:
        # A concurrent draft of this newsletter won the period key or a comparison.
        session.rollback()
        if created and store.find_edition(
            session, newsletter_id=newsletter.id, period_key=period.key
        ):
            raise  # the same period, drafted by another path a moment earlier: read it
        taken = store.comparison_ids_taken(
            session, newsletter_id=newsletter.id, exclude_edition_id=edition.id
        )
        clash = sorted((cid, taken[cid]) for cid in ids if cid in taken)
        if not clash:
            raise
        raise ComparisonTaken(
            "; ".join(f"comparison {c} is already in edition {e}" for c, e in clash)
            + ": one comparison goes out in one edition (cancel that edition to free it)"
        ) from None
    session.commit()
    alert_editors(session, settings, edition, now or at)
    after = {c.id: c.title for c in selection.items if c.id}
    return DraftOutcome(
        edition,
        created,
        period,
        selection,
        added=tuple(t for i, t in after.items() if i not in before) if not created else (),
        removed=tuple(t for i, t in before.items() if i not in after),
        edited=tuple(t for i, t in after.items() if seen.get(i) and seen[i] != now_prints.get(i)),
    )


def _select(
    session: Session,
    newsletter: Newsletter,
    period: Period,
    rows: list[EditionItem],
    *,
    edition: Edition | None,
    cap: int,
) -> tuple[Selection, set[int]]:
    """The period's selection with an editor's pins kept: a pinned item that is still in the
    period (and in no other live edition) stays, at its place, and takes one of the ``cap``
    places (pins past the cap stay too: an editor chose them); the rest of the places go to
    the newest comparisons, in selection order. Returns the selection and the pins kept."""
    published = list(
        store.comparisons_published_between(session, start=period.start, end=period.end)
    )
    by_id = {c.id: c for c in published if c.id}
    taken = set(
        store.comparison_ids_taken(
            session,
            newsletter_id=newsletter.id or 0,
            exclude_edition_id=edition.id if edition else None,
        )
    )
    dropped = dropped_ids(edition)
    pins = [
        (at, r.comparison_id)
        for at, r in enumerate(rows)
        if r.pinned and r.comparison_id in by_id and r.comparison_id not in taken | dropped
    ]
    pinned = {cid for _, cid in pins}
    fresh = select_comparisons(
        published, period=period, already_sent=taken | dropped | pinned, cap=cap
    )
    room = max(0, cap - len(pins))
    order = [c.id for c in fresh.items[:room] if c.id]
    for at, cid in pins:  # ascending places: each lands where the editor left it
        order.insert(min(at, len(order)), cid)
    more = (*fresh.items[room:], *fresh.more)
    return Selection(tuple(by_id[i] for i in order), len(more), more), pinned


def _context(
    session: Session, edition: Edition, settings: Settings
) -> tuple[EditionContext, Newsletter]:
    newsletter = session.get(Newsletter, edition.newsletter_id)
    assert newsletter is not None and edition.id is not None
    items = with_overrides(store.edition_comparisons(session, edition_id=edition.id), edition)
    # The summary of the calls as this edition makes them (an editor's calls included),
    # unless an editor wrote the preheader.
    preheader = overrides_of(edition).get("preheader") or default_preheader(items, edition.subject)
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
        preheader=preheader,
        web_url=f"{settings.base_url}/archive/{edition.id}",
        more_url=newsletter.site_url,
        site_url=newsletter.site_url,
        postal_address=settings.postal_address,
        intro=edition.intro or "",
        base_url=settings.base_url,
        newsletter_slug=newsletter.slug,
        more=tuple(
            MoreLink(str(m["title"]), str(m["url"])) for m in json.loads(edition.more_links or "[]")
        ),
        written=written_calls(edition),
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
        reply_to=settings.reply_to or None,
    )
    dkim = signer_from(settings.dkim_keys, domain=settings.dkim_domain or identity.sender.domain)
    paths = return_paths(settings.bounce_address, settings.signing_keys())
    return rendered, MessageTemplate(rendered, identity, dkim, paths), newsletter


def edition_verdicts(
    session: Session, *, edition: Edition, settings: Settings
) -> list[ComparisonVerdict]:
    """The calls as this edition's email shows them (what a written intro is written from)."""
    ctx, _ = _context(session, edition, settings)
    return verdicts_of(ctx)


def sender_of(newsletter: Newsletter, settings: Settings) -> Address:
    """The newsletter's own From (its schedule file's ``from``), else ``NEWSLETTER_FROM``."""
    if newsletter.from_address:
        name, addr = parseaddr(newsletter.from_address)
        local, _, domain = addr.rpartition("@")
        return Address(display_name=name, username=local, domain=domain)
    return settings.sender()


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


def overrides_of(edition: Edition) -> dict[str, Any]:
    """An editor's changes for this edition only: "preheader", and "verdicts" by comparison
    id (see ``Edition.overrides``)."""
    return dict(json.loads(edition.overrides)) if edition.overrides else {}


def with_overrides(items: list[ComparisonData], edition: Edition) -> list[ComparisonData]:
    """The comparisons as this edition shows them: an editor's call for one edition replaces
    the comparison's own (the store's record is not changed)."""
    verdicts = overrides_of(edition).get("verdicts", {})
    return [
        c.model_copy(update={"verdict": verdicts[str(c.id)]}) if str(c.id) in verdicts else c
        for c in items
    ]


def written_calls(edition: Edition) -> dict[int, WrittenCall]:
    """The written verdicts an editor accepted for this edition, by comparison id."""
    found = overrides_of(edition).get("written", {})
    return {int(cid): WrittenCall.from_json(data) for cid, data in found.items()}


def dropped_ids(edition: Edition | None) -> set[int]:
    """The comparisons an editor dropped from this draft (a refresh leaves them out)."""
    if edition is None or not edition.dropped:
        return set()
    return {int(i) for i in json.loads(edition.dropped)}


def refresh_draft(
    session: Session, *, edition_id: int, settings: Settings, now: datetime
) -> DraftOutcome:
    """Re-select a draft's comparisons from the store for its own period (comparisons
    published or edited since are picked up, dropped ones stay out); ``changes()`` says what
    moved. An approved draft or a started edition is left as it is."""
    edition = store.get_edition(session, edition_id=edition_id)
    newsletter = session.get(Newsletter, edition.newsletter_id)
    assert newsletter is not None
    period = Period(
        key=edition.period_key,
        start=edition.period_start,
        end=edition.period_end,
        timezone=newsletter.timezone,
    )
    return draft_edition(
        session,
        settings=settings,
        newsletter_slug=newsletter.slug,
        at=now,
        now=now,
        period=period,
        scheduled_for=edition.scheduled_for,
    )


def size_note(session: Session, *, edition_id: int, settings: Settings) -> str | None:
    """What an editor should hear about the edition's size: cards made compact to stay under
    Gmail's clip, or a clip nothing could avoid (``RenderedEdition.clip_note``)."""
    edition = store.get_edition(session, edition_id=edition_id)
    rendered, _, _ = prepare(session, edition=edition, settings=settings)
    return rendered.clip_note


class SubjectError(NewsletterError, ValueError):
    """An edition subject that can't be used; the message says what is allowed."""


def set_subject(session: Session, *, edition_id: int, subject: str | None) -> Edition:
    """An editor's subject for a draft (None: back to the computed one), kept across draft
    refreshes; the caller commits (with its audit record). Refused once the edition started
    or was approved: the approved email is the one that goes out."""
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        raise EditionStateError(f"edition {edition_id} is {edition.status}: its subject is fixed")
    if edition.approved_at is not None:
        raise EditionStateError(
            f"edition {edition_id} is approved: `newsletter edition unapprove {edition_id}` "
            "first, change the subject, then approve it again"
        )
    if subject is not None:
        subject = " ".join(subject.split())
        if not subject or len(subject) > MAX_SUBJECT:
            raise SubjectError(f"subject: 1 to {MAX_SUBJECT} characters, got {len(subject)}")
    items = store.edition_comparisons(session, edition_id=edition_id)
    edition.custom_subject = subject
    edition.subject = subject or default_subject(items, edition.more_count)
    edition.preheader = default_preheader(items, edition.subject)
    session.flush()
    return edition
