"""Verdicts: panel share, community figure, split, the documented one-line rule."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from newsletter import store
from newsletter.content import ComparisonData, ToolData
from newsletter.verdicts import cut_at_word, sentences, summarize, tool_verdict

SEED_SLUG = "claude-4-api-tool-use-streaming-vs-hugging-face-inference-providers"


def _tool(reviews: list[tuple[str, str, str]], **extra: object) -> ToolData:
    return ToolData.model_validate(
        {
            "name": "T",
            "category": "C",
            "tagline": "A tagline that says what it does.",
            "description": "D",
            "entry_price": "Free",
            "reviews": [{"lens": lens, "verdict": v, "quote": q} for lens, v, q in reviews],
            **extra,
        }
    )


def test_seed_verdicts(seeded: Session) -> None:
    claude, hf = summarize(store.get_comparison(seeded, slug=SEED_SLUG)).tools
    assert claude.panel == "Panel: 4/4 ship" and claude.ship_percent == 100
    assert claude.community == "—" and claude.call == "Ship"
    assert [(s.lens, s.verdict) for s in claude.split] == [
        ("builder", "ship"),
        ("skeptic", "ship"),
        ("futurist", "ship"),
        ("buyer", "ship"),
    ]
    # Rule 3: the first builder sentence that says "ship".
    assert claude.one_line.startswith("The specific decision that earns the ship: cache")
    assert hf.one_line.startswith("The specific technical decision that earns the ship")
    assert len(claude.one_line) <= 180 and claude.one_line.endswith("…")


def test_editor_summary_wins() -> None:
    tool = _tool([("builder", "skip", "Bad. Skip it.")], editor_summary="Editors love it.")
    assert tool_verdict(tool).one_line == "Editors love it."


def test_majority_skip_prefers_builder_then_buyer_and_the_verdict_word() -> None:
    tool = _tool(
        [
            ("futurist", "ship", "The future is bright. Ship."),
            ("skeptic", "skip", "Too early. I would skip this for now."),
            ("buyer", "skip", "Pricing is unclear. Nobody budgets for it."),
        ]
    )
    v = tool_verdict(tool)
    assert v.call == "Skip" and v.panel == "Panel: 1/3 ship"
    # buyer comes before skeptic, but has no sentence saying "skip"; the skeptic's does.
    assert v.one_line == "I would skip this for now."


def test_no_verdict_word_falls_back_to_first_sentence_and_no_reviews_to_tagline() -> None:
    tool = _tool([("skeptic", "ship", "Works well. Fast too."), ("buyer", "ship", "Cheap.")])
    assert tool_verdict(tool).one_line == "Cheap."
    empty = tool_verdict(_tool([]))
    assert empty.one_line == "A tagline that says what it does." and empty.call == "No panel yet"


def test_split_and_community() -> None:
    tool = _tool(
        [("builder", "ship", "Yes."), ("buyer", "skip", "No.")], community={"up": 12, "down": 3}
    )
    v = tool_verdict(tool)
    assert v.call == "Split" and v.community == "12 up · 3 down"


def test_cut_at_word_boundary() -> None:
    text = "word " * 100
    cut = cut_at_word(text, 50)
    assert len(cut) <= 50 and cut.endswith("word…")
    assert cut_at_word("short") == "short"
    assert sentences("Is it good? Yes. 2 of 3 ship. See v2.0 notes.") == [
        "Is it good?",
        "Yes.",
        "2 of 3 ship.",
        "See v2.0 notes.",
    ]


def test_summary_keeps_both_tools(make_comparison: Callable[..., ComparisonData]) -> None:
    v = summarize(make_comparison())
    assert [t.name for t in v.tools] == ["Alpha", "Beta"]
    assert v.tools[0].panel == "Panel: 1/2 ship"
