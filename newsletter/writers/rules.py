"""The rule-based writer: the deterministic verdict (:mod:`newsletter.edition.verdicts`) in the
writers' shape. It is the default and the fallback; it needs no key, no network and no
money, and the same comparison always gets the same answer."""

from __future__ import annotations

from collections.abc import Sequence

from newsletter.edition.content import ComparisonData
from newsletter.edition.verdicts import ComparisonVerdict, Quote, summarize
from newsletter.writers.contract import INTRO_BUDGET, Reason, ToolTake, Written, WrittenVerdict

_COUNTS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")

NAME = "rules"


def _reason(quote: Quote | None, fallback: str) -> Reason | None:
    if quote is None or len(quote.text) < 20:
        return None
    text = quote.text.rstrip("\u2026").strip()
    return Reason(text=f"{quote.lens.capitalize()}: {fallback}", quote=text[:400])


def write(comparison: ComparisonData) -> Written:
    """The rules' call; a refusal (with the rules' own headline) when they make no pick or a
    tool lacks a reason for and against, since the structure needs both."""
    verdict = summarize(comparison)
    call = verdict.call
    pick = {0: "first", 1: "second"}.get(call.pick) if call.pick is not None else None
    if call.kind == "both":
        pick = "both"
    if pick is None:
        return Written(NAME, NAME, None, refusal=f"the rules make no pick: {call.headline}")
    takes = []
    for tool in verdict.tools:
        good = _reason(tool.reason_for, "why it ships")
        bad = _reason(tool.reason_against, "the catch")
        if good is None or bad is None:
            return Written(
                NAME, NAME, None, refusal=f"{tool.short_name} lacks a reason for or against"
            )
        takes.append(
            ToolTake(
                for_whom=(tool.for_whom or tool.tagline)[:100], reason_for=good, reason_against=bad
            )
        )
    headline = f"{call.headline}. {call.detail}".strip(" .") if call.detail else call.headline
    return Written(
        NAME,
        NAME,
        WrittenVerdict(pick=pick, headline=headline[:280], tools=takes),
    )


def intro(verdicts: Sequence[ComparisonVerdict]) -> Written:
    """The rules' intro: how many comparisons, then the calls in the email's order, whole
    calls only, within :data:`INTRO_BUDGET` ("Three comparisons this week. Ship Claude 4 API;
    Both ship: ...; Too close to call: A vs B.")."""
    count = len(verdicts)
    spelled = _COUNTS[count] if count < len(_COUNTS) else f"{count:,}"
    text = f"{spelled} {'comparison' if count == 1 else 'comparisons'} this week."
    calls: list[str] = []
    for verdict in verdicts:
        call = verdict.call.headline.rstrip(". ")
        a, b = verdict.tools
        if verdict.call.kind == "both":
            call = f"both {a.short_name} and {b.short_name} ship, for different jobs"
        elif verdict.call.kind in ("tie", "none", "neither", "editor"):
            call = f"{call}: {a.short_name} vs {b.short_name}"
        joined = "; ".join([*calls, call])
        if len(text) + 1 + len(joined) + 1 > INTRO_BUDGET:
            break
        calls.append(call)
    if calls:
        joined = "; ".join(calls)
        text += " " + joined[0].upper() + joined[1:] + "."
    return Written(NAME, NAME, None, intro=text)
