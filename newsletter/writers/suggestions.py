"""Suggestions for a draft: each comparison's verdict as the chosen writer writes it, kept per
comparison content so drafting again costs nothing, within a per-edition token budget.

Nothing here changes what is sent: a suggestion goes into an edition only when an editor
accepts it (:func:`newsletter.publish.set_verdict` with its headline, audited by the caller).
A writer that fails, a refused answer, or the budget running out leaves the rule-based
verdict in place, and :class:`SuggestReport` says so, one note per comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from newsletter.edition.content import ComparisonData, fingerprint
from newsletter.edition.verdicts import ComparisonVerdict
from newsletter.operations import audit
from newsletter.storage import store
from newsletter.storage.models import IntroSuggestion, Suggestion
from newsletter.writers import Writer
from newsletter.writers.contract import WriterError, Written, WrittenVerdict
from newsletter.writers.pricing import estimate
from newsletter.writers.prompt import edition_block

#: The key ``on_delta`` gets for the intro's pieces (comparison ids start at 1).
INTRO_KEY = 0


@dataclass
class SuggestReport:
    """What one pass over a draft did."""

    written: int = 0
    reused: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: The week's intro: "written", "reused", or None (not asked, or it fell back: see notes).
    intro: str | None = None


def cached(session: Session, comparison: ComparisonData, writer: Writer) -> Suggestion | None:
    """The suggestion this writer and model already made for this content, if any."""
    return session.exec(
        select(Suggestion).where(
            Suggestion.comparison_id == comparison.id,
            Suggestion.fingerprint == fingerprint(comparison),
            Suggestion.writer == writer.name,
            Suggestion.model == writer.model,
        )
    ).first()


def _call_columns(written: Written, now: datetime) -> dict[str, Any]:
    return {
        "writer": written.writer,
        "model": written.model,
        "refusal": written.refusal,
        "input_tokens": written.usage.input_tokens,
        "output_tokens": written.usage.output_tokens,
        "cache_creation_tokens": written.usage.cache_creation_tokens,
        "cache_read_tokens": written.usage.cache_read_tokens,
        "cost_usd": estimate(written.model, written.usage, written.provider),
        "provider": written.provider,
        "latency_ms": written.latency_ms,
        "created_at": now,
    }


def store_written(
    session: Session, comparison: ComparisonData, written: Written, now: datetime
) -> Suggestion:
    row = Suggestion(
        comparison_id=comparison.id or 0,
        fingerprint=fingerprint(comparison),
        verdict=written.verdict.model_dump_json() if written.verdict else None,
        **_call_columns(written, now),
    )
    session.add(row)
    session.flush()
    return row


def intro_fingerprint(verdicts: Sequence[ComparisonVerdict]) -> str:
    """What an intro is written from: the edition's calls as the prompt carries them."""
    return hashlib.sha256(edition_block(verdicts).encode()).hexdigest()


def latest_intro(session: Session, *, edition_id: int) -> IntroSuggestion | None:
    """The newest intro suggestion for this edition (whatever calls it was written from)."""
    return session.exec(
        select(IntroSuggestion)
        .where(IntroSuggestion.edition_id == edition_id)
        .order_by(col(IntroSuggestion.id).desc())
    ).first()


def get_intro(session: Session, *, suggestion_id: int) -> IntroSuggestion:
    row = session.get(IntroSuggestion, suggestion_id)
    if row is None:
        raise store.NotFound(f"intro suggestion {suggestion_id} does not exist")
    return row


def _suggest_intro(
    session: Session,
    *,
    edition_id: int,
    verdicts: Sequence[ComparisonVerdict],
    writer: Writer,
    budget: int,
    now: datetime,
    report: SuggestReport,
    on_delta: Callable[[int, str], None] | None,
) -> None:
    """The week's intro from ``verdicts``, unless this writer wrote it from the same calls
    already; within what is left of the budget. Notes go into ``report``."""
    if not verdicts:
        return
    printed = intro_fingerprint(verdicts)
    if session.exec(
        select(IntroSuggestion).where(
            IntroSuggestion.edition_id == edition_id,
            IntroSuggestion.fingerprint == printed,
            IntroSuggestion.writer == writer.name,
            IntroSuggestion.model == writer.model,
        )
    ).first():
        report.intro = "reused"
        return
    if writer.name != "rules" and report.tokens >= budget:
        report.notes.append(
            f"the intro: the edition's budget ({budget:,} tokens) is spent; yours stands"
        )
        return
    relay = _relay(on_delta, INTRO_KEY) if on_delta is not None else None
    try:
        written = writer.write_intro(verdicts, on_delta=relay)
    except WriterError as exc:
        report.notes.append(f"the intro: {exc}; yours stands")
        return
    row = IntroSuggestion(
        edition_id=edition_id,
        fingerprint=printed,
        text=written.intro,
        **_call_columns(written, now),
    )
    session.add(row)
    session.commit()
    report.tokens += written.usage.total
    report.cost_usd += row.cost_usd or 0.0
    if written.intro is None:
        report.notes.append(f"the intro: refused ({written.refusal}); yours stands")
    else:
        report.intro = "written"


def suggest(
    session: Session,
    *,
    edition_id: int,
    writer: Writer,
    budget: int,
    now: datetime,
    on_delta: Callable[[int, str], None] | None = None,
    intro_from: Callable[[], Sequence[ComparisonVerdict]] | None = None,
) -> SuggestReport:
    """Ask ``writer`` about every comparison the draft carries that it has not answered for
    this content yet, until ``budget`` tokens are spent; commits after each answer (a call
    that was paid for is never lost to a later failure). ``on_delta(comparison_id, piece)``
    receives the answer as it streams (:data:`INTRO_KEY` for the intro). With
    ``intro_from`` (the edition's calls as the email shows them), the week's intro is asked
    for last, within the same budget."""
    report = SuggestReport()
    for comparison in store.edition_comparisons(session, edition_id=edition_id):
        name = comparison.title
        if cached(session, comparison, writer) is not None:
            report.reused += 1
            continue
        if writer.name != "rules" and report.tokens >= budget:
            report.notes.append(
                f"{name}: the edition's budget ({budget:,} tokens) is spent; "
                "the rules' verdict stands"
            )
            continue
        relay: Callable[[str], None] | None = None
        if on_delta is not None:
            relay = _relay(on_delta, comparison.id or 0)
        try:
            written = writer.write(comparison, on_delta=relay)
        except WriterError as exc:
            report.notes.append(f"{name}: {exc}; the rules' verdict stands")
            continue
        row = store_written(session, comparison, written, now)
        session.commit()
        report.written += 1
        report.tokens += written.usage.total
        report.cost_usd += row.cost_usd or 0.0
        if written.verdict is None:
            report.notes.append(f"{name}: refused ({written.refusal}); the rules' verdict stands")
    if intro_from is not None:
        _suggest_intro(
            session,
            edition_id=edition_id,
            verdicts=intro_from(),
            writer=writer,
            budget=budget,
            now=now,
            report=report,
            on_delta=on_delta,
        )
    return report


def _relay(on_delta: Callable[[int, str], None], comparison_id: int) -> Callable[[str], None]:
    return lambda piece: on_delta(comparison_id, piece)


def for_edition(
    session: Session, *, edition_id: int, items: list[ComparisonData] | None = None
) -> dict[int, list[Suggestion]]:
    """Every suggestion for the current content of each comparison the draft carries,
    newest first, by comparison id (for the draft page, which passes the ``items`` it has
    loaded already)."""
    if items is None:
        items = store.edition_comparisons(session, edition_id=edition_id)
    prints = {c.id: fingerprint(c) for c in items if c.id}
    found: dict[int, list[Suggestion]] = {cid: [] for cid in prints}
    if not prints:
        return found
    for row in session.exec(
        select(Suggestion)
        .where(col(Suggestion.comparison_id).in_(list(prints)))
        .order_by(col(Suggestion.id).desc())
    ):
        if prints.get(row.comparison_id) == row.fingerprint:
            found[row.comparison_id].append(row)
    return found


def verdict_of(row: Suggestion) -> WrittenVerdict | None:
    return WrittenVerdict.model_validate(json.loads(row.verdict)) if row.verdict else None


def get(session: Session, *, suggestion_id: int) -> Suggestion:
    row = session.get(Suggestion, suggestion_id)
    if row is None:
        raise store.NotFound(f"suggestion {suggestion_id} does not exist")
    return row


def suggest_recorded(
    session: Session,
    *,
    edition_id: int,
    writer: Writer,
    budget: int,
    now: datetime,
    actor: str,
    on_delta: Callable[[int, str], None] | None = None,
    intro_from: Callable[[], Sequence[ComparisonVerdict]] | None = None,
) -> SuggestReport:
    """:func:`suggest`, then one audit record of what it did (the console, the CLI and the
    scheduler all write suggestions this way; the draft page shows its notes), committed."""
    report = suggest(
        session,
        edition_id=edition_id,
        writer=writer,
        budget=budget,
        now=now,
        on_delta=on_delta,
        intro_from=intro_from,
    )
    audit.record(
        session,
        actor=actor,
        action="edition.suggest",
        target=f"edition {edition_id}",
        now=now,
        detail={
            "writer": writer.name,
            "model": writer.model,
            "written": report.written,
            "reused": report.reused,
            "tokens": report.tokens,
            "notes": report.notes,
            "intro": report.intro,
        },
    )
    session.commit()
    return report
