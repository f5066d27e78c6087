"""Pure: the call on each comparison, and what supports it, from the panel and the votes.

A comparison asks "which one should you ship with?"; this step answers it. Nothing here
reads the clock, the database or a template: the same comparison always gets the same call.
The rules, written down in the README ("The verdict rules"):

**Each tool.** Its *call* is the panel's majority: Ship, Skip, Split (a tie) or "No panel yet".
Its *share* is ship votes over reviews.

**The comparison's call**, in this order:

1. An editor's verdict (``verdict`` in the import file) is the call, shown in full.
2. Neither tool has a panel: the community decides when both have at least
   :data:`MIN_VOTES` votes (the higher up-share is the pick), else "No panel verdict yet".
3. Only one tool has a panel: it is the pick if its call is Ship, else "Skip both for now".
4. Equal shares: both Ship -> "Both ship, for different jobs" (each with whom it is for and
   its entry price); both Skip -> "Skip both for now"; both Split -> "Too close to call" (with
   which one is free to start, when only one is). In each case the community tips it to a pick when
   both tools have :data:`MIN_VOTES` votes and their up-shares differ by
   :data:`COMMUNITY_MARGIN` or more.
5. Different shares: the higher share is the pick when its call is Ship; "Leans X" when it
   is only Split; "Skip both for now" when both are Skip.

**What supports it**, each a sentence from the tool's own reviews, carrying its lens:

- *Reason for*: from the ship reviews, lenses in the order builder, buyer, futurist,
  skeptic, the first sentence that says why it ships ("earns the ship", "ship because", "wins
  on", ...); else the first that says "ship"; else the first sentence of the first ship review.
- *Reason against*: from the skip reviews, lenses skeptic, buyer, builder, futurist, the first
  sentence that says "skip", else the first sentence; with no skip review, the first caution in
  any review ("breaks", "kills", "vulnerability", "risk", "catching up", ...), skeptic first.
  A split tool therefore shows one ship and one skip reason.
- *For whom*: the buyer lens's "the buyer is ..." clause, else a sentence's "for teams / for
  developers ..." clause, else nothing (the tagline stands in).
- An editor's one-line summary of a tool is shown in full, never cut (its length is checked
  at import).

**Quotes are cut** at a sentence boundary, never mid-word: a sentence over the budget is cut
at its last clause boundary (``:``, ``;``, ``—``, ``,``) inside the budget, else at the last
word, and ends with "…".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from newsletter.edition.content import ComparisonData, ReviewData, ToolData

#: Characters a quoted reason may take (a sentence beyond it is cut at a clause or word).
QUOTE_BUDGET = 220
#: Characters of a tool's description shown (whole sentences within it).
DESCRIPTION_BUDGET = 160
#: Votes each tool needs before the community may decide or tip a call.
MIN_VOTES = 5
#: Difference in up-share (0-1) that lets the community tip a tied panel.
COMMUNITY_MARGIN = 0.15
LENS_NAMES = {"builder": "Builder", "skeptic": "Skeptic", "futurist": "Futurist", "buyer": "Buyer"}
FOR_ORDER = ("builder", "buyer", "futurist", "skeptic")
AGAINST_ORDER = ("skeptic", "buyer", "builder", "futurist")
#: Sentences that say why a tool ships, strongest first (each tier is tried over every review
#: before the next).
_FOR_SIGNALS = (
    re.compile(r"earns? the ship|ship because|still a ship|\bwins on\b", re.IGNORECASE),
    re.compile(
        r"\bworth (it|the)\b|\bsolves\b|genuinely (differentiated|additive)|is sound|"
        r"actually works",
        re.IGNORECASE,
    ),
)
#: Cautions in reviews that still say ship, strongest first.
_AGAINST_SIGNALS = (
    re.compile(r"\bbreaks?\b|\bkills?\b|vulnerab|would make me wrong", re.IGNORECASE),
    re.compile(
        r"\brisk|catching up|\bcompress|would have to be true|\bfails?\b|\bwon't\b|"
        r"\bcan't\b|\bnot yet\b|\bdownside\b",
        re.IGNORECASE,
    ),
)
_BUYER_IS = re.compile(
    r"\bthe buyer is (?:clearly |obviously )?(?P<who>.+?)(?:\s+[—–-]\s+|;|, (?:which|and|but)\b|$)",
    re.IGNORECASE,
)
_FOR_WHO = re.compile(
    r"\b(?:built|made|meant|great|best) for (?P<who>(?:teams|developers|anyone|people|"
    r"companies|engineers|founders|creators|analysts|writers|marketers|small|solo)[^.;—]*)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(`]?[A-Z0-9`])")
_MARKS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": "'"})
_CLAUSE = re.compile(r"(?::|;|\s[—–]|,)\s")


@dataclass(frozen=True, slots=True)
class Quote:
    """A reviewer's own sentence (possibly cut), with the lens that said it, and, for a
    written verdict an editor accepted, the reason in the writer's words (``gist``)."""

    text: str
    lens: str
    verdict: str  # "ship" or "skip"
    gist: str = ""

    @property
    def lens_name(self) -> str:
        return lens_name(self.lens)


@dataclass(frozen=True, slots=True)
class LensVerdict:
    lens: str
    verdict: str  # "ship" or "skip"

    @property
    def lens_name(self) -> str:
        return lens_name(self.lens)


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    name: str
    short_name: str
    category: str
    tagline: str
    description: str
    entry_price: str
    ship: int
    panel_size: int
    community: str  # "no votes yet" or "41 up · 6 down"
    call: str  # "Ship", "Skip", "Split" or "No panel yet"
    split: tuple[LensVerdict, ...]
    editor_note: str | None
    reason_for: Quote | None
    reason_against: Quote | None
    for_whom: str | None

    @property
    def panel(self) -> str:
        return f"Panel {self.ship}/{self.panel_size} ship" if self.panel_size else "No panel yet"

    @property
    def panel_line(self) -> str:
        """ "Builder ship, Skeptic skip, ..." in review order."""
        return ", ".join(f"{lv.lens_name} {lv.verdict}" for lv in self.split)

    @property
    def share(self) -> float | None:
        return self.ship / self.panel_size if self.panel_size else None

    @property
    def ship_percent(self) -> int | None:
        share = self.share
        return None if share is None else round(100 * share)


@dataclass(frozen=True, slots=True)
class Call:
    """The comparison's answer: ``kind`` is editor, pick, lean, both, neither, tie or none;
    ``pick`` the index of the chosen tool (pick and lean), ``headline`` the words to show,
    ``why`` the figures behind it."""

    kind: str
    headline: str
    why: str
    pick: int | None = None
    #: One sentence under the headline: who the pick is for, or what each tool is for.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ComparisonVerdict:
    comparison: ComparisonData
    tools: tuple[ToolVerdict, ToolVerdict]
    call: Call

    @property
    def intro(self) -> str:
        """The comparison's intro, whole sentences up to :data:`DESCRIPTION_BUDGET`."""
        intro = self.comparison.intro
        return excerpt_sentences(intro, DESCRIPTION_BUDGET) if intro else ""

    @property
    def picked(self) -> ToolVerdict | None:
        return None if self.call.pick is None else self.tools[self.call.pick]


def summarize(comparison: ComparisonData) -> ComparisonVerdict:
    first, second = (tool_verdict(t) for t in comparison.tools)
    tools = (first, second)
    call = decide(comparison, tools)
    return ComparisonVerdict(comparison, tools, replace(call, detail=detail_of(call, tools)))


@dataclass(frozen=True, slots=True)
class WrittenReason:
    """A reason in a writer's words and the reviewer's words it rests on (checked to be in
    that tool's reviews before an editor could accept it)."""

    gist: str
    quote: str


@dataclass(frozen=True, slots=True)
class WrittenTake:
    for_whom: str
    reason_for: WrittenReason
    reason_against: WrittenReason


@dataclass(frozen=True, slots=True)
class WrittenCall:
    """A verdict written for this edition (a writer's suggestion an editor accepted, maybe
    edited): ``pick`` is 0 or 1, or None for "both, for different jobs"."""

    pick: int | None
    headline: str
    takes: tuple[WrittenTake, WrittenTake]

    @classmethod
    def from_json(cls, data: dict[str, object]) -> WrittenCall:
        """From the writers' verdict JSON (``pick`` "first", "second" or "both", ``tools``
        with ``for_whom`` and ``reason_for``/``reason_against`` of ``text`` and ``quote``)."""
        pick = {"first": 0, "second": 1}.get(str(data["pick"]))
        takes = []
        tools = data["tools"]
        assert isinstance(tools, list)
        for tool in tools:
            reasons = [
                WrittenReason(str(tool[side]["text"]), str(tool[side]["quote"]))
                for side in ("reason_for", "reason_against")
            ]
            takes.append(WrittenTake(str(tool["for_whom"]), *reasons))
        return cls(pick, str(data["headline"]), (takes[0], takes[1]))


def with_written(verdict: ComparisonVerdict, written: WrittenCall) -> ComparisonVerdict:
    """The comparison as a written verdict tells it: its pick and headline (an editor's own
    call, when set, keeps the headline), and for each tool whom it fits and its reasons, each
    quote shown with the lens of the review it comes from."""
    tools = tuple(
        replace(
            tool,
            for_whom=take.for_whom,
            reason_for=_written_quote(source, take.reason_for, "ship"),
            reason_against=_written_quote(source, take.reason_against, "skip"),
        )
        for tool, take, source in zip(
            verdict.tools, written.takes, verdict.comparison.tools, strict=True
        )
    )
    pair = (tools[0], tools[1])
    headline = verdict.call.headline if verdict.call.kind == "editor" else written.headline
    kind = "both" if written.pick is None else "pick"
    call = Call(kind, headline, verdict.call.why, written.pick)
    return ComparisonVerdict(verdict.comparison, pair, replace(call, detail=detail_of(call, pair)))


def _written_quote(tool: ToolData, reason: WrittenReason, side: str) -> Quote:
    """The quote with the lens and verdict of the review that holds it (spacing aside)."""
    wanted = plain(reason.quote).strip("\"'….")[:60]
    text = excerpt(reason.quote, QUOTE_BUDGET)
    for review in tool.reviews:
        if wanted and wanted in plain(review.quote):
            return Quote(text, review.lens, review.verdict, reason.gist)
    return Quote(text, "", side, reason.gist)


def plain(text: str) -> str:
    """``text`` as quotes are compared: typographic quote marks and backticks as plain ones,
    every run of whitespace as one space (a writer's quote and the review it comes from)."""
    return " ".join(text.translate(_MARKS).split())


def detail_of(call: Call, tools: Sequence[ToolVerdict]) -> str:
    """The sentence under the call: for whom the pick is right, or which job each tool does
    and what it costs to start; for no pick, the panel's figures and, when only one of the two
    is free to start, that."""
    if call.kind == "editor":
        return ""
    if call.kind in ("pick", "lean") and call.pick is not None:
        tool = tools[call.pick]
        return f"Best for {tool.for_whom}." if tool.for_whom else f"{tool.tagline}."
    if call.kind == "both":
        return " ".join(
            f"{t.short_name} ({t.entry_price}): for {t.for_whom}."
            if t.for_whom
            else f"{t.short_name} ({t.entry_price}): {t.tagline}."
            for t in tools
        )
    free = [t for t in tools if t.entry_price.strip().lower() == "free"]
    price = f" {free[0].short_name} is free to start." if len(free) == 1 else ""
    return f"{call.why}.{price}"


def lens_name(lens: str) -> str:
    return LENS_NAMES.get(lens, lens.replace("-", " ").capitalize())


def short_name(name: str) -> str:
    """The part of a long product name before its subtitle ("Claude 4 API: Tool Use ..." ->
    "Claude 4 API"), for headlines and the contents."""
    for mark in (": ", " — ", " – ", " - "):
        head = name.split(mark, 1)[0].strip()
        if head and head != name and len(head) >= 3:
            return head
    return name


def tool_verdict(tool: ToolData) -> ToolVerdict:
    ship = sum(1 for r in tool.reviews if r.verdict == "ship")
    size = len(tool.reviews)
    if not size:
        call = "No panel yet"
    elif ship * 2 == size:
        call = "Split"
    else:
        call = "Ship" if ship * 2 > size else "Skip"
    reason_for = _reason_for(tool.reviews)
    reason_against = _reason_against(tool.reviews, exclude=reason_for)
    return ToolVerdict(
        name=tool.name,
        short_name=short_name(tool.name),
        category=tool.category,
        tagline=tool.tagline,
        description=excerpt_sentences(tool.description, DESCRIPTION_BUDGET),
        entry_price=tool.entry_price,
        ship=ship,
        panel_size=size,
        community=community_figure(tool),
        call=call,
        split=tuple(LensVerdict(r.lens, r.verdict) for r in tool.reviews),
        editor_note=" ".join(tool.editor_summary.split()) if tool.editor_summary else None,
        reason_for=reason_for,
        reason_against=reason_against,
        for_whom=for_whom(tool.reviews),
    )


def community_figure(tool: ToolData) -> str:
    if tool.community is None or tool.community.total == 0:
        return "no votes yet"
    return f"{tool.community.up:,} up · {tool.community.down:,} down"


def _up_share(tool: ToolData) -> float | None:
    votes = tool.community
    if votes is None or votes.total < MIN_VOTES:
        return None
    return votes.up / votes.total


def decide(comparison: ComparisonData, tools: Sequence[ToolVerdict]) -> Call:
    """The comparison's call (the rules are in the module docstring)."""
    a, b = tools
    why = f"{a.short_name}: {a.panel}; {b.short_name}: {b.panel}"
    if comparison.verdict:
        return Call("editor", " ".join(comparison.verdict.split()), why)
    votes = [_up_share(t) for t in comparison.tools]
    community_pick = _community_pick(votes)
    shares = (a.share, b.share)
    if shares[0] is None and shares[1] is None:
        if community_pick is not None:
            return _pick(tools, community_pick, why + "; the community decides")
        return Call("none", "No panel verdict yet", why)
    if shares[0] is None or shares[1] is None:
        index = 0 if shares[0] is not None else 1
        if tools[index].call == "Ship":
            return _pick(tools, index, why)
        return Call("neither", "Skip both for now", why)
    if shares[0] == shares[1]:
        if community_pick is not None:
            return _pick(tools, community_pick, why + "; the community tips it")
        if a.call == "Ship":
            return Call("both", "Both ship, for different jobs", why)
        if a.call == "Skip":
            return Call("neither", "Skip both for now", why)
        return Call("tie", "Too close to call", why)
    index = 0 if shares[0] > shares[1] else 1
    if tools[index].call == "Ship":
        return _pick(tools, index, why)
    if tools[index].call == "Split":
        return Call("lean", f"Leans {tools[index].short_name}, with a split panel", why, index)
    return Call("neither", "Skip both for now", why)


def _community_pick(votes: Sequence[float | None]) -> int | None:
    first, second = votes
    if first is None or second is None or abs(first - second) < COMMUNITY_MARGIN:
        return None
    return 0 if first > second else 1


def _pick(tools: Sequence[ToolVerdict], index: int, why: str) -> Call:
    return Call("pick", f"Ship {tools[index].short_name}", why, index)


# --- the reviewers' own words ------------------------------------------------------------------


def _ordered(reviews: Iterable[ReviewData], order: Sequence[str]) -> list[ReviewData]:
    return sorted(reviews, key=lambda r: order.index(r.lens) if r.lens in order else len(order))


def _quote(review: ReviewData, sentence: str) -> Quote:
    return Quote(excerpt(sentence, QUOTE_BUDGET), review.lens, review.verdict)


def _first(
    reviews: Sequence[ReviewData], test: re.Pattern[str] | None, exclude: Quote | None = None
) -> Quote | None:
    for review in reviews:
        for sentence in sentences(review.quote):
            if test is not None and not test.search(sentence):
                continue
            quote = _quote(review, sentence)
            if exclude is None or quote.text != exclude.text:
                return quote
    return None


def _reason_for(reviews: Sequence[ReviewData]) -> Quote | None:
    shipping = _ordered((r for r in reviews if r.verdict == "ship"), FOR_ORDER)
    for signal in (*_FOR_SIGNALS, re.compile(r"\bship\b", re.IGNORECASE), None):
        if found := _first(shipping, signal):
            return found
    return None


def _reason_against(reviews: Sequence[ReviewData], exclude: Quote | None) -> Quote | None:
    skipping = _ordered((r for r in reviews if r.verdict == "skip"), AGAINST_ORDER)
    if skipping:
        return _first(skipping, re.compile(r"\bskip\b", re.IGNORECASE), exclude) or _first(
            skipping, None, exclude
        )
    ordered = _ordered(reviews, AGAINST_ORDER)
    for signal in _AGAINST_SIGNALS:
        if found := _first(ordered, signal, exclude):
            return found
    return None


def for_whom(reviews: Sequence[ReviewData]) -> str | None:
    """Who the tool is right for, in the reviewers' words ("a developer or small team who
    ..."), or None."""
    for review in _ordered(reviews, ("buyer", "builder", "skeptic", "futurist")):
        for sentence in sentences(review.quote):
            match = _BUYER_IS.search(sentence) if review.lens == "buyer" else None
            match = match or _FOR_WHO.search(sentence)
            if match:
                who = match.group("who").strip().rstrip(".,;:")
                if len(who) >= 8:
                    return excerpt(who, 140)
    return None


def sentences(text: str) -> list[str]:
    """Split prose into sentences at ., ! or ? followed by space and a capital or digit."""
    parts = [p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))]
    return [p for p in parts if p] or [text.strip()]


def excerpt(sentence: str, budget: int) -> str:
    """``sentence`` whole if it fits ``budget`` characters; else cut at its last clause
    boundary inside the budget (if that keeps a third of it), else at the last whole word,
    with "…". Never mid-word."""
    text = " ".join(sentence.split())
    if len(text) <= budget:
        return text
    room = text[: budget - 1]
    clauses = [m.start() for m in _CLAUSE.finditer(room)]
    if clauses and clauses[-1] >= budget // 3:
        return room[: clauses[-1]].rstrip(" ,;:—–") + "…"
    space = room.rfind(" ")
    cut = room[:space] if space > 0 else room
    return cut.rstrip(" ,;:—–-") + "…"


def excerpt_sentences(text: str, budget: int) -> str:
    """As many whole sentences of ``text`` as fit ``budget`` (at least the first, cut by
    :func:`excerpt` if it alone is too long)."""
    parts = sentences(text)
    if len(parts[0]) > budget:
        return excerpt(parts[0], budget)
    kept = parts[0]
    for part in parts[1:]:
        if len(kept) + 1 + len(part) > budget:
            break
        kept += " " + part
    return kept
