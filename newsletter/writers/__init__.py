"""Verdict writers: who writes each comparison's verdict suggestion.

``rules`` (the default and the fallback) needs nothing; ``claude`` and ``huggingface`` need
the ``ai`` extra and a key, and are only imported when chosen (:func:`make_writer`). A
writer's answer is a suggestion: it is checked against the reviews
(:mod:`newsletter.writers.grounding`), and an editor accepts, edits or rejects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sqlmodel import Session

from newsletter.config import WRITER_NAMES, Settings
from newsletter.edition.content import ComparisonData
from newsletter.edition.verdicts import ComparisonVerdict
from newsletter.storage.models import Edition, Newsletter
from newsletter.writers import rules
from newsletter.writers.contract import Usage, WriterError, Written, WrittenVerdict

__all__ = ["WRITERS", "Usage", "Writer", "Written", "WriterError", "WrittenVerdict", "make_writer"]

#: The writers a newsletter may choose (``NEWSLETTER_WRITER``, a schedule file's ``writer``).
WRITERS = WRITER_NAMES


class Writer(Protocol):
    """Writes a comparison's verdict (``write``) and an edition's intro (``write_intro``,
    from the calls as the email shows them). A refused answer comes back with the reason;
    a service that fails raises :class:`WriterError`."""

    name: str
    model: str

    def write(
        self, comparison: ComparisonData, *, on_delta: Callable[[str], None] | None = None
    ) -> Written: ...

    def write_intro(
        self,
        verdicts: Sequence[ComparisonVerdict],
        *,
        on_delta: Callable[[str], None] | None = None,
    ) -> Written: ...


class RulesWriter:
    """The deterministic verdicts as a writer (no key, no network, no cost)."""

    name = "rules"
    model = "rules"

    def write(
        self, comparison: ComparisonData, *, on_delta: Callable[[str], None] | None = None
    ) -> Written:
        return rules.write(comparison)

    def write_intro(
        self,
        verdicts: Sequence[ComparisonVerdict],
        *,
        on_delta: Callable[[str], None] | None = None,
    ) -> Written:
        return rules.intro(verdicts)


def name_for(settings: Settings, newsletter: Newsletter | None) -> str:
    """Who writes for ``newsletter``: its schedule file's ``writer``, else
    ``NEWSLETTER_WRITER``."""
    own = newsletter.writer if newsletter is not None else None
    return own or settings.writer


def for_edition(session: Session, settings: Settings, edition_id: int) -> Writer:
    """The writer of the edition's newsletter, built (:func:`make_writer`)."""
    edition = session.get(Edition, edition_id)
    newsletter = session.get(Newsletter, edition.newsletter_id) if edition else None
    return make_writer(settings, name_for(settings, newsletter))


def make_writer(settings: Settings, name: str | None = None) -> Writer:
    """The writer ``name`` (by default ``NEWSLETTER_WRITER``) built from the settings; raises
    :class:`WriterError` naming what is missing (the package, the key)."""
    chosen = name or settings.writer
    if chosen == "rules":
        return RulesWriter()
    if chosen == "claude":
        from newsletter.writers.claude import ClaudeWriter

        return ClaudeWriter(
            api_key=settings.anthropic_api_key,
            model=settings.claude_model,
            base_url=settings.anthropic_base_url or None,
            timeout=settings.writer_timeout,
        )
    if chosen == "huggingface":
        from newsletter.writers.huggingface import HuggingFaceWriter

        return HuggingFaceWriter(
            token=settings.hf_token,
            model=settings.hf_model,
            providers=[p.strip() for p in settings.hf_providers.split(",") if p.strip()],
            endpoint=settings.hf_endpoint or None,
            router=settings.hf_router or None,
            timeout=settings.writer_timeout,
        )
    raise WriterError(f"writer: {chosen!r} is not one of {', '.join(WRITERS)}")
