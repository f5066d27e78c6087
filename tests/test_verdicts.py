"""The verdict step: the call on each comparison and the reviewers' sentences behind it.

The rules are in ``newsletter/edition/verdicts.py`` and the README ("The verdict rules"); each case
here is one of them: the seed comparison, a split, a skip/ship pair, a tie, a comparison with
no community votes, missing optional fields, and the editor's own words.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlmodel import Session

from newsletter.edition.content import ComparisonData, ToolData
from newsletter.edition.verdicts import (
    QUOTE_BUDGET,
    excerpt,
    sentences,
    short_name,
    summarize,
    tool_verdict,
)
from newsletter.storage import store

from .conftest import comparison_dict

SEED_SLUG = "claude-4-api-tool-use-streaming-vs-hugging-face-inference-providers"


def _tool(
    name: str,
    reviews: list[tuple[str, str, str]],
    votes: tuple[int, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "category": "Developer Tools",
        "tagline": f"{name} does a thing",
        "description": f"{name} is a tool. It does things well.",
        "entry_price": "Free",
        "community": {"up": votes[0], "down": votes[1]} if votes else None,
        "reviews": [{"lens": lens, "verdict": v, "quote": q} for lens, v, q in reviews],
        **extra,
    }


def _comparison(first: dict[str, Any], second: dict[str, Any], **extra: Any) -> ComparisonData:
    return ComparisonData.model_validate(comparison_dict("a-vs-b", tools=[first, second], **extra))


SHIP_ALL = [
    ("builder", "ship", "Clean API. The decision that earns the ship: it streams."),
    ("skeptic", "ship", "Competitors exist. It breaks when the cache is cold."),
    ("futurist", "ship", "Agents will need this."),
    ("buyer", "ship", "The buyer is a platform team running agents in production — real money."),
]


def test_the_seed_comparison_gets_a_call_with_reasons_from_its_reviews(seeded: Session) -> None:
    """Both tools ship 4/4 with no votes: both ship, each for its own job, with the builder's
    reason to ship, the skeptic's caution, and the buyer's "for whom", each attributed."""
    verdict = summarize(store.get_comparison(seeded, slug=SEED_SLUG))
    claude, hf = verdict.tools
    assert verdict.call.kind == "both"
    assert verdict.call.headline == "Both ship, for different jobs"
    assert claude.short_name == "Claude 4 API"
    assert verdict.call.detail.startswith(
        "Claude 4 API (Paid): for the engineering team at any company running Claude in production"
    )
    assert "Hugging Face Inference Providers Marketplace (Free): for a developer or small" in (
        verdict.call.detail
    )
    assert claude.panel == "Panel 4/4 ship" and claude.community == "no votes yet"
    assert claude.reason_for is not None and claude.reason_for.lens_name == "Builder"
    assert claude.reason_for.text.startswith("The specific decision that earns the ship: cache")
    assert claude.reason_against is not None and claude.reason_against.lens_name == "Skeptic"
    assert claude.reason_against.text.startswith("The specific scenario where this breaks")
    assert hf.reason_against is not None
    assert hf.reason_against.text.startswith("It breaks when a provider updates")
    # Every one of the eight reviews leaves a trace: its lens and verdict are listed.
    assert [lv.lens_name for lv in claude.split + hf.split] == [
        "Builder",
        "Skeptic",
        "Futurist",
        "Buyer",
    ] * 2


def test_a_split_tool_shows_one_ship_and_one_skip_reason() -> None:
    split = tool_verdict(
        ToolData.model_validate(
            _tool(
                "Lint",
                [
                    ("builder", "ship", "Versioned rules. It earns the ship because of that."),
                    ("skeptic", "skip", "Too noisy. I'd skip it until it ranks findings."),
                    ("futurist", "ship", "Fine."),
                    ("buyer", "skip", "Pricey."),
                ],
            )
        )
    )
    assert split.call == "Split"
    assert split.reason_for is not None and split.reason_for.verdict == "ship"
    assert split.reason_for.text == "It earns the ship because of that."
    assert split.reason_against is not None and split.reason_against.verdict == "skip"
    assert split.reason_against.text == "I'd skip it until it ranks findings."
    assert split.reason_against.lens_name == "Skeptic"


def test_a_ship_and_a_skip_make_a_pick_for_whom_it_is_right() -> None:
    skip_all = [(lens, "skip", f"{lens} says skip it.") for lens in ("builder", "skeptic")]
    verdict = summarize(
        _comparison(_tool("Alpha Pro: the agent", SHIP_ALL), _tool("Beta", skip_all))
    )
    assert verdict.call.kind == "pick" and verdict.call.pick == 0
    assert verdict.call.headline == "Ship Alpha Pro"
    assert verdict.call.detail == "Best for a platform team running agents in production."
    assert verdict.picked is not None and verdict.picked.name == "Alpha Pro: the agent"


def test_a_tie_is_too_close_to_call_unless_the_community_tips_it() -> None:
    split = [("builder", "ship", "Ship it."), ("skeptic", "skip", "Skip it.")]
    tie = summarize(_comparison(_tool("Alpha", split), _tool("Beta", split, entry_price="Paid")))
    assert tie.call.kind == "tie" and tie.call.headline == "Too close to call"
    assert tie.call.pick is None
    assert tie.call.detail.endswith("Alpha is free to start.")  # the price breaks no tie
    tipped = summarize(_comparison(_tool("Alpha", split, (10, 10)), _tool("Beta", split, (30, 2))))
    assert tipped.call.kind == "pick" and tipped.call.pick == 1
    assert "the community tips it" in tipped.call.why
    # Too few votes, or too close a share, leaves the tie alone.
    few = summarize(_comparison(_tool("Alpha", split, (1, 0)), _tool("Beta", split, (0, 3))))
    close = summarize(_comparison(_tool("Alpha", split, (50, 50)), _tool("Beta", split, (55, 45))))
    assert few.call.kind == close.call.kind == "tie"


def test_no_community_votes_and_no_panel() -> None:
    verdict = summarize(_comparison(_tool("Alpha", []), _tool("Beta", [])))
    assert verdict.call.kind == "none" and verdict.call.headline == "No panel verdict yet"
    alpha = verdict.tools[0]
    assert alpha.call == "No panel yet" and alpha.panel == "No panel yet"
    assert alpha.reason_for is None and alpha.reason_against is None and alpha.for_whom is None
    assert alpha.community == "no votes yet"
    voted = summarize(_comparison(_tool("Alpha", [], (2, 20)), _tool("Beta", [], (40, 4))))
    assert voted.call.kind == "pick" and voted.call.pick == 1


def test_missing_optional_fields_still_get_a_call() -> None:
    """No intro, no votes, no editor text, an unknown lens: the call and reasons still come."""
    odd = [("ops", "ship", "Deploys in a minute, so it's a ship."), ("skeptic", "skip", "Meh.")]
    verdict = summarize(
        _comparison(_tool("Alpha", odd), _tool("Beta", [("builder", "skip", "No.")]))
    )
    assert verdict.comparison.intro is None
    assert (
        verdict.call.kind == "lean" and verdict.call.headline == "Leans Alpha, with a split panel"
    )
    alpha = verdict.tools[0]
    assert alpha.reason_for is not None and alpha.reason_for.lens_name == "Ops"
    assert alpha.for_whom is None and verdict.call.detail == "Alpha does a thing."


def test_both_skip_is_skip_both() -> None:
    skip = [("builder", "skip", "Skip.")]
    verdict = summarize(_comparison(_tool("Alpha", skip), _tool("Beta", skip)))
    assert verdict.call.kind == "neither" and verdict.call.headline == "Skip both for now"


def test_the_editors_words_win_and_are_never_cut() -> None:
    long_note = "Editors' take: " + "really " * 38 + "good."
    assert len(long_note) > QUOTE_BUDGET
    verdict = summarize(
        _comparison(
            _tool("Alpha", SHIP_ALL, editor_summary=long_note),
            _tool("Beta", SHIP_ALL),
            verdict="Ship Alpha for agents; Beta only if you already pay for it.",
        )
    )
    assert verdict.call.kind == "editor"
    assert verdict.call.headline == "Ship Alpha for agents; Beta only if you already pay for it."
    assert verdict.tools[0].editor_note == long_note  # whole


def test_editor_texts_are_checked_for_length_at_import() -> None:
    with pytest.raises(ValidationError, match="verdict"):
        _comparison(_tool("Alpha", SHIP_ALL), _tool("Beta", SHIP_ALL), verdict="x" * 281)
    with pytest.raises(ValidationError, match="editor_summary"):
        _comparison(_tool("Alpha", SHIP_ALL, editor_summary="x" * 301), _tool("Beta", SHIP_ALL))


@pytest.mark.parametrize("budget", [40, 60, 90, 150])
def test_quotes_are_cut_at_a_clause_or_word_never_mid_word(budget: int) -> None:
    text = (
        "The specific scenario where this breaks: cache hit rates depend entirely on prompt "
        "structure, and developers who compose prompts dynamically see near-zero utilization."
    )
    cut = excerpt(text, budget)
    assert len(cut) <= budget and cut.endswith("…")
    body = cut[:-1]
    assert text.startswith(body)
    assert text[len(body)] in " ,:;", f"cut mid-word: {cut!r}"


def test_a_sentence_that_fits_is_whole_and_sentences_split_at_capitals() -> None:
    assert excerpt("Short and sweet.", 50) == "Short and sweet."
    assert sentences("One. Two! `three` is code. 4 wins.") == [
        "One.",
        "Two!",
        "`three` is code.",
        "4 wins.",
    ]
    assert sentences("e.g. lower case stays.") == ["e.g. lower case stays."]


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("Claude 4 API: Tool Use Streaming & Prompt Caching", "Claude 4 API"),
        ("Framecut Auto-Editor", "Framecut Auto-Editor"),
        ("Tabular — the sheet copilot", "Tabular"),
        ("X: y", "X: y"),
    ],
)
def test_short_names(name: str, short: str) -> None:
    assert short_name(name) == short
