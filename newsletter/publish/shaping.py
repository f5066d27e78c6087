"""What an editor changes on a draft before approving it: the intro, and which comparisons it
carries in which order.

Only a draft that is not approved can change (the approved email is the one that goes out).
A dropped comparison is remembered on the edition, so refreshing the draft from the store
leaves it out; restoring it puts it back at the end. The subject and preheader follow the
items unless an editor set the subject. The caller commits and records the change in the
audit log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlmodel import Session

from newsletter.edition.content import ComparisonData, fingerprint
from newsletter.edition.lifecycle import EditionStateError
from newsletter.edition.rendering import default_preheader, default_subject
from newsletter.errors import NewsletterError
from newsletter.publish.drafting import dropped_ids, overrides_of
from newsletter.storage import store
from newsletter.storage.models import Comparison, Edition, EditionStatus
from newsletter.writers import grounding, suggestions

#: Characters of an edition's intro.
MAX_INTRO = 600


class ShapingError(NewsletterError, ValueError):
    """A change a draft can't take; the message names the field and what is allowed."""


def _open_draft(session: Session, edition_id: int) -> Edition:
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        raise EditionStateError(f"edition {edition_id} is {edition.status}: its content is fixed")
    if edition.approved_at is not None:
        raise EditionStateError(
            f"edition {edition_id} is approved: withdraw the approval to change it"
        )
    return edition


def set_intro(session: Session, *, edition_id: int, intro: str | None) -> Edition:
    edition = _open_draft(session, edition_id)
    text = " ".join((intro or "").split())
    if len(text) > MAX_INTRO:
        raise ShapingError(f"intro: at most {MAX_INTRO} characters, got {len(text)}")
    edition.intro = text or None
    session.flush()
    return edition


def _items(session: Session, edition: Edition) -> list[int]:
    return [r.comparison_id for r in store.edition_item_rows(session, edition_id=edition.id or 0)]


def _save(
    session: Session,
    edition: Edition,
    ids: list[int],
    *,
    pin: int | None = None,
    unpin: int | None = None,
) -> None:
    """Store the draft's items in this order; pins and what each was seen with carry over
    (an item new to the draft is seen now: the editor just chose it)."""
    if not ids:
        raise ShapingError("items: an edition carries at least one comparison")
    rows = store.edition_item_rows(session, edition_id=edition.id or 0)
    pinned = {r.comparison_id for r in rows if r.pinned}
    if pin is not None:
        pinned.add(pin)
    pinned.discard(unpin or 0)
    prints = {r.comparison_id: r.fingerprint for r in rows}
    store.set_edition_items(
        session,
        edition_id=edition.id or 0,
        newsletter_id=edition.newsletter_id,
        comparison_ids=ids,
        pinned=pinned & set(ids),
        fingerprints=prints,
    )
    items = store.edition_comparisons(session, edition_id=edition.id or 0)
    fresh = {c.id: fingerprint(c) for c in items if c.id and c.id not in prints}
    if fresh:
        store.set_item_fingerprints(session, edition_id=edition.id or 0, fingerprints=fresh)
    if edition.more_links:  # what is carried now is not "also this week"
        urls = {c.url for c in items}
        more = [m for m in json.loads(edition.more_links) if m.get("url") not in urls]
        edition.more_links = json.dumps(more, ensure_ascii=False)
        edition.more_count = len(more)
    if not edition.custom_subject:
        edition.subject = default_subject(items, edition.more_count)
    edition.preheader = default_preheader(items, edition.subject)
    session.flush()


def pin_item(session: Session, *, edition_id: int, comparison_id: int, pinned: bool) -> Edition:
    """Pin (or unpin) one item: a refresh of the draft keeps a pinned item at its place,
    even past the cap; unpinned items follow the selection (newest first)."""
    edition = _open_draft(session, edition_id)
    ids = _items(session, edition)
    if comparison_id not in ids:
        raise ShapingError(f"comparison {comparison_id} is not in edition {edition_id}")
    if pinned:
        _save(session, edition, ids, pin=comparison_id)
    else:
        _save(session, edition, ids, unpin=comparison_id)
    return edition


def pinned_ids(session: Session, *, edition: Edition) -> set[int]:
    """The draft's pinned items (for the draft page)."""
    return {
        r.comparison_id
        for r in store.edition_item_rows(session, edition_id=edition.id or 0)
        if r.pinned
    }


def edited_since_seen(
    session: Session, *, edition: Edition, items: list[ComparisonData] | None = None
) -> list[tuple[int, str]]:
    """(id, title) of the items whose comparison was edited in the store since the draft was
    made or last refreshed (the preview already shows the new text; this says it changed).
    ``items``: the draft's comparisons, when the caller has them loaded already."""
    seen = {
        r.comparison_id: r.fingerprint
        for r in store.edition_item_rows(session, edition_id=edition.id or 0)
    }
    if items is None:
        items = store.edition_comparisons(session, edition_id=edition.id or 0)
    return [
        (c.id, c.title) for c in items if c.id and seen.get(c.id) and seen[c.id] != fingerprint(c)
    ]


def drop_item(session: Session, *, edition_id: int, comparison_id: int) -> Edition:
    edition = _open_draft(session, edition_id)
    ids = _items(session, edition)
    if comparison_id not in ids:
        raise ShapingError(f"comparison {comparison_id} is not in edition {edition_id}")
    _save(session, edition, [i for i in ids if i != comparison_id])
    edition.dropped = json.dumps(sorted(dropped_ids(edition) | {comparison_id}))
    session.flush()
    return edition


def restore_item(session: Session, *, edition_id: int, comparison_id: int) -> Edition:
    edition = _open_draft(session, edition_id)
    dropped = dropped_ids(edition)
    if comparison_id not in dropped:
        raise ShapingError(f"comparison {comparison_id} was not dropped from edition {edition_id}")
    _save(session, edition, [*_items(session, edition), comparison_id])
    edition.dropped = (
        json.dumps(sorted(dropped - {comparison_id})) if dropped - {comparison_id} else None
    )
    session.flush()
    return edition


def move_item(session: Session, *, edition_id: int, comparison_id: int, up: bool) -> Edition:
    """One place earlier (``up``) or later, and pinned there (a refresh keeps the editor's
    order); the first item leads the subject."""
    edition = _open_draft(session, edition_id)
    ids = _items(session, edition)
    if comparison_id not in ids:
        raise ShapingError(f"comparison {comparison_id} is not in edition {edition_id}")
    at = ids.index(comparison_id)
    to = at - 1 if up else at + 1
    if 0 <= to < len(ids):
        ids[at], ids[to] = ids[to], ids[at]
        _save(session, edition, ids, pin=comparison_id)
    return edition


def dropped_comparisons(session: Session, *, edition: Edition) -> list[tuple[int, str]]:
    """(id, title) of what was dropped, for the draft page's "restore" buttons."""
    out = []
    for comparison_id in sorted(dropped_ids(edition)):
        row = session.get(Comparison, comparison_id)
        if row is not None:
            out.append((comparison_id, row.title))
    return out


def candidates(session: Session, *, edition: Edition) -> list[tuple[int, str]]:
    """(id, title) of the period's comparisons this draft could carry but does not: left out
    by the cap, or published since the draft was made; not dropped, not in another live
    edition."""
    carried = set(_items(session, edition))
    taken = set(
        store.comparison_ids_taken(
            session, newsletter_id=edition.newsletter_id, exclude_edition_id=edition.id
        )
    )
    skip = carried | taken | dropped_ids(edition)
    return [
        (c.id or 0, c.title)
        for c in store.comparisons_published_between(
            session, start=edition.period_start, end=edition.period_end
        )
        if c.id not in skip
    ]


def add_item(session: Session, *, edition_id: int, comparison_id: int) -> Edition:
    """Carry one of the :func:`candidates` too, at the end and pinned (the cap would leave it
    out again on a refresh); drop another to swap."""
    edition = _open_draft(session, edition_id)
    if comparison_id not in {cid for cid, _ in candidates(session, edition=edition)}:
        raise ShapingError(
            f"comparison {comparison_id} is not a candidate for edition {edition_id} "
            "(published in another period, already carried, dropped, or in another edition)"
        )
    _save(session, edition, [*_items(session, edition), comparison_id], pin=comparison_id)
    return edition


#: Characters of an edition's own preheader, and of an editor's call on one comparison (the
#: same limit as the import file's ``verdict``).
MAX_PREHEADER = 200
MAX_VERDICT = 280


def _set_override(edition: Edition, key: str, value: object) -> None:
    overrides = overrides_of(edition)
    if value in (None, "", {}):
        overrides.pop(key, None)
    else:
        overrides[key] = value
    edition.overrides = json.dumps(overrides, ensure_ascii=False) if overrides else None


def set_preheader(session: Session, *, edition_id: int, preheader: str | None) -> Edition:
    """The inbox's second line for this edition (None: the computed summary of the calls)."""
    edition = _open_draft(session, edition_id)
    text = " ".join((preheader or "").split())
    if len(text) > MAX_PREHEADER:
        raise ShapingError(f"preheader: at most {MAX_PREHEADER} characters, got {len(text)}")
    _set_override(edition, "preheader", text or None)
    session.flush()
    return edition


def set_verdict(
    session: Session, *, edition_id: int, comparison_id: int, verdict: str | None
) -> Edition:
    """An editor's call on one comparison, for this edition only, shown in full (None: the
    computed call, or the comparison's own editor verdict)."""
    edition = _open_draft(session, edition_id)
    if comparison_id not in _items(session, edition):
        raise ShapingError(f"comparison {comparison_id} is not in edition {edition_id}")
    text = " ".join((verdict or "").split())
    if len(text) > MAX_VERDICT:
        raise ShapingError(f"verdict: at most {MAX_VERDICT} characters, got {len(text)}")
    _set_verdict_text(edition, comparison_id, text or None)
    if not text:  # back to the computed call: a written verdict accepted earlier goes too
        written = dict(overrides_of(edition).get("written", {}))
        written.pop(str(comparison_id), None)
        _set_override(edition, "written", written)
    session.flush()
    return edition


def _set_verdict_text(edition: Edition, comparison_id: int, text: str | None) -> None:
    verdicts = dict(overrides_of(edition).get("verdicts", {}))
    if text:
        verdicts[str(comparison_id)] = text
    else:
        verdicts.pop(str(comparison_id), None)
    _set_override(edition, "verdicts", verdicts)


def verdict_overrides(edition: Edition) -> dict[int, str]:
    """This edition's own calls, by comparison id (for the draft page's forms)."""
    return {int(k): v for k, v in overrides_of(edition).get("verdicts", {}).items()}


def preheader_override(edition: Edition) -> str:
    """This edition's own preheader, or "" (the computed summary is used)."""
    return str(overrides_of(edition).get("preheader") or "")


#: The parts of a written verdict an editor may change before accepting it (the quotes stay:
#: they are what ties each reason to a review).
EDITABLE = (
    "headline",
    "tools.0.for_whom",
    "tools.0.reason_for.text",
    "tools.0.reason_against.text",
    "tools.1.for_whom",
    "tools.1.reason_for.text",
    "tools.1.reason_against.text",
)


def decide_suggestion(
    session: Session,
    *,
    edition_id: int,
    suggestion_id: int,
    accept: bool,
    edits: Mapping[str, str] | None = None,
) -> tuple[int, str | None, list[str]]:
    """An editor's decision on a writer's suggestion for this draft. Accepting puts the
    written verdict into this edition (its headline as the call, each tool's reasons with their
    quotes and whom it fits), with the editor's ``edits`` (keys from :data:`EDITABLE`) applied
    and checked again against the reviews; rejecting records the decision and leaves the call
    as it is. Returns (comparison id, the call now set or None, the fields edited). The
    caller commits with its audit record."""
    edition = _open_draft(session, edition_id)
    row = suggestions.get(session, suggestion_id=suggestion_id)
    if row.comparison_id not in _items(session, edition):
        raise ShapingError(
            f"suggestion {suggestion_id} is for comparison {row.comparison_id}, which edition "
            f"{edition_id} does not carry"
        )
    comparison = next(
        c
        for c in store.edition_comparisons(session, edition_id=edition_id)
        if c.id == row.comparison_id
    )
    verdict = suggestions.verdict_of(row)
    decisions = dict(overrides_of(edition).get("suggestions", {}))
    written = dict(overrides_of(edition).get("written", {}))
    key = str(row.comparison_id)
    edited: list[str] = []
    if accept:
        if verdict is None:
            raise ShapingError(
                f"suggestion {suggestion_id} was refused ({row.refusal}): nothing to accept"
            )
        if row.fingerprint != fingerprint(comparison):
            raise ShapingError(
                f"suggestion {suggestion_id} was written for an earlier version of "
                f"{comparison.title!r}: write the suggestions again"
            )
        data = verdict.model_dump()
        for field, value in (edits or {}).items():
            if field not in EDITABLE:
                raise ShapingError(f"{field}: not editable; one of {', '.join(EDITABLE)}")
            if _put(data, field, " ".join(value.split())):
                edited.append(field)
        try:
            verdict = grounding.check(comparison, data)
        except grounding.Ungrounded as exc:
            raise ShapingError(f"suggestion {suggestion_id} as edited: {exc}") from None
        written[key] = verdict.model_dump()
    else:
        undone = written.pop(key, None)
        shown = overrides_of(edition).get("verdicts", {}).get(key)
        if undone is not None and shown == undone.get("headline"):
            _set_verdict_text(edition, row.comparison_id, None)  # the accepted call goes too
    decisions[key] = {
        "id": suggestion_id,
        "state": "accepted" if accept else "rejected",
        **({"edited": edited} if edited else {}),
    }
    _set_override(edition, "suggestions", decisions)
    _set_override(edition, "written", written)
    if accept and verdict is not None:
        _set_verdict_text(edition, row.comparison_id, verdict.headline)
    session.flush()
    return row.comparison_id, verdict.headline if accept and verdict else None, edited


def _put(data: dict[str, object], path: str, value: str) -> bool:
    """Set ``data``'s field at the dotted ``path`` to ``value``; True when it changed."""
    *parents, last = path.split(".")
    node: object = data
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            assert isinstance(node, dict)
            node = node[part]
    assert isinstance(node, dict)
    if node.get(last) == value:
        return False
    node[last] = value
    return True


def decide_intro_suggestion(
    session: Session, *, edition_id: int, suggestion_id: int, accept: bool
) -> str | None:
    """An editor's decision on a written intro: accepting makes it the edition's intro
    (:func:`set_intro`; editable like any intro), rejecting records the decision and leaves
    the intro as it is. Returns the intro now set, or None. The caller commits and audits."""
    edition = _open_draft(session, edition_id)
    row = suggestions.get_intro(session, suggestion_id=suggestion_id)
    if row.edition_id != edition_id:
        raise ShapingError(f"intro suggestion {suggestion_id} is for edition {row.edition_id}")
    if accept and row.text is None:
        raise ShapingError(
            f"intro suggestion {suggestion_id} was refused ({row.refusal}): nothing to accept"
        )
    _set_override(
        edition,
        "intro_suggestion",
        {"id": suggestion_id, "state": "accepted" if accept else "rejected"},
    )
    if accept:
        set_intro(session, edition_id=edition_id, intro=row.text)
    session.flush()
    return row.text if accept else None


def intro_decision(edition: Edition) -> dict[str, object]:
    """{"id": intro suggestion id, "state": "accepted" | "rejected"}, or {}."""
    return dict(overrides_of(edition).get("intro_suggestion") or {})


def suggestion_decisions(edition: Edition) -> dict[int, dict[str, object]]:
    """{comparison id: {"id": suggestion id, "state": "accepted" | "rejected"}}."""
    return {int(k): v for k, v in overrides_of(edition).get("suggestions", {}).items()}
