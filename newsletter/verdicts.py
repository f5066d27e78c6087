"""Pure: the verdict summary of each tool in a comparison.

The one-line verdict is the editor's summary when there is one. Otherwise it is taken from the
reviews by this rule (documented in the README):

1. The panel's majority is "ship" when ship votes >= skip votes, else "skip".
2. Look at the reviews with the majority verdict, lenses in the order builder, buyer, skeptic,
   futurist, then any other lens, in file order.
3. Take the first sentence, across those reviews, that says the verdict word ("ship"/"skip") as
   a word; if none does, the first sentence of the first of those reviews.
4. No reviews at all: the tool's tagline.
5. Cut to at most ``MAX_VERDICT_CHARS`` characters at a word boundary, ending with "…".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.content import ComparisonData, ToolData

MAX_VERDICT_CHARS = 180
LENS_ORDER = ("builder", "buyer", "skeptic", "futurist")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class LensVerdict:
    lens: str
    verdict: str  # "ship" or "skip"


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    name: str
    category: str
    tagline: str
    entry_price: str
    ship: int
    panel_size: int
    community: str  # "—" or "12 up · 3 down"
    call: str  # "Ship", "Skip", "Split" or "No panel yet"
    split: tuple[LensVerdict, ...]
    one_line: str

    @property
    def panel(self) -> str:
        return f"Panel: {self.ship}/{self.panel_size} ship"

    @property
    def ship_percent(self) -> int | None:
        return round(100 * self.ship / self.panel_size) if self.panel_size else None


@dataclass(frozen=True, slots=True)
class ComparisonVerdict:
    comparison: ComparisonData
    tools: tuple[ToolVerdict, ToolVerdict]


def summarize(comparison: ComparisonData) -> ComparisonVerdict:
    first, second = comparison.tools
    return ComparisonVerdict(
        comparison=comparison, tools=(tool_verdict(first), tool_verdict(second))
    )


def tool_verdict(tool: ToolData) -> ToolVerdict:
    ship = sum(1 for r in tool.reviews if r.verdict == "ship")
    size = len(tool.reviews)
    if not size:
        call = "No panel yet"
    elif ship * 2 == size:
        call = "Split"
    else:
        call = "Ship" if ship * 2 > size else "Skip"
    return ToolVerdict(
        name=tool.name,
        category=tool.category,
        tagline=tool.tagline,
        entry_price=tool.entry_price,
        ship=ship,
        panel_size=size,
        community=community_figure(tool),
        call=call,
        split=tuple(LensVerdict(r.lens, r.verdict) for r in tool.reviews),
        one_line=one_line_verdict(tool),
    )


def community_figure(tool: ToolData) -> str:
    if tool.community is None or tool.community.total == 0:
        return "—"
    return f"{tool.community.up} up · {tool.community.down} down"


def one_line_verdict(tool: ToolData) -> str:
    if tool.editor_summary:
        return cut_at_word(tool.editor_summary)
    if not tool.reviews:
        return cut_at_word(tool.tagline)
    ship = sum(1 for r in tool.reviews if r.verdict == "ship")
    majority = "ship" if ship * 2 >= len(tool.reviews) else "skip"
    ordered = sorted(
        (r for r in tool.reviews if r.verdict == majority),
        key=lambda r: LENS_ORDER.index(r.lens) if r.lens in LENS_ORDER else len(LENS_ORDER),
    )
    word = re.compile(rf"\b{majority}\b", re.IGNORECASE)
    for review in ordered:
        for sentence in sentences(review.quote):
            if word.search(sentence):
                return cut_at_word(sentence)
    return cut_at_word(sentences(ordered[0].quote)[0])


def sentences(text: str) -> list[str]:
    """Split prose into sentences at ., ! or ? followed by space and a capital or digit."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return [p for p in parts if p] or [text.strip()]


def cut_at_word(text: str, limit: int = MAX_VERDICT_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else cut at the last space before it + "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:—-") + "…"
