"""What a verdict writer returns, and the one schema every model is asked to fill.

A writer reads one comparison (two tools, their reviews by lens, votes, prices) and returns a
:class:`WrittenVerdict`: the pick ("first", "second" or "both", for different jobs), the call
in one line as the email shows it, and for each tool whom it fits and one reason for and one
against, each carrying the reviewer sentence it comes from. The schema is fixed (the tool
names are not in it: "first" and "second" are positions), so the part of a prompt that holds
it is byte-identical for every comparison and every week, which is what prompt caching needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from newsletter.errors import NewsletterError

#: Characters of the one-line call (the same budget as an editor's verdict in the email).
HEADLINE_BUDGET = 280
#: Characters of a reason in the writer's words, and of whom a tool fits.
REASON_BUDGET = 160
FOR_WHOM_BUDGET = 100
#: A quoted span shorter than this says too little to tie a reason to a review.
MIN_QUOTE = 20
MAX_QUOTE = 400
#: Characters of a written intro (an editor's own may take up to 600).
INTRO_BUDGET = 400


def _within(low: int, high: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=low, max_length=high)


# Named aliases rather than a function returning ``Annotated[...]``: a type checker reads an
# annotation only as a type, never as a call.
ReasonText = Annotated[str, _within(1, REASON_BUDGET)]
QuoteText = Annotated[str, _within(MIN_QUOTE, MAX_QUOTE)]
ForWhomText = Annotated[str, _within(1, FOR_WHOM_BUDGET)]
HeadlineText = Annotated[str, _within(1, HEADLINE_BUDGET)]
IntroText = Annotated[str, _within(1, INTRO_BUDGET)]


class Reason(BaseModel):
    """One reason, in the writer's words, and the reviewer's sentence it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: ReasonText = Field(description="the reason in a few words")
    quote: QuoteText = Field(
        description="the exact words from one of this tool's reviews that the reason rests on"
    )


class ToolTake(BaseModel):
    """One tool as the verdict sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    for_whom: ForWhomText = Field(
        description="who should pick this tool, e.g. 'teams running long-context agents'"
    )
    reason_for: Reason
    reason_against: Reason


class WrittenVerdict(BaseModel):
    """The structure every writer fills (and the input schema of the model's tool)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pick: Literal["first", "second", "both"] = Field(
        description="'first' or 'second' tool, or 'both' when each fits a different job"
    )
    headline: HeadlineText = Field(
        description="the call in one sentence, naming the pick, as readers will see it"
    )
    tools: list[ToolTake] = Field(
        min_length=2, max_length=2, description="the first tool's take, then the second's"
    )


class WrittenIntro(BaseModel):
    """The week's intro: a few sentences under the greeting, from the edition's calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: IntroText = Field(description="two or three plain sentences that open the week's email")


#: The model's tools: the verdict, and the week's intro. Built once; the same bytes on every
#: request (both go on every request, so verdicts and intros share one cached prefix).
VERDICT_TOOL: dict[str, Any] = {
    "name": "record_verdict",
    "description": "Record the verdict on the comparison. Call it exactly once.",
    "input_schema": WrittenVerdict.model_json_schema(),
}
INTRO_TOOL: dict[str, Any] = {
    "name": "record_intro",
    "description": "Record the week's intro. Call it exactly once, only when asked for one.",
    "input_schema": WrittenIntro.model_json_schema(),
}
TOOLS: tuple[dict[str, Any], ...] = (VERDICT_TOOL, INTRO_TOOL)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call used, as the service reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


@dataclass(frozen=True, slots=True)
class Written:
    """What one writer call produced: the verdict or the intro (None when refused, with the
    reason), what it cost, who answered and how long it took."""

    writer: str
    model: str
    verdict: WrittenVerdict | None
    refusal: str | None = None
    usage: Usage = field(default_factory=Usage)
    provider: str | None = None
    latency_ms: int = 0
    raw: str = ""
    #: For an intro call: the checked intro (``verdict`` stays None).
    intro: str | None = None


class WriterError(NewsletterError, RuntimeError):
    """A writer could not produce an answer (the service refused, failed or is not set up);
    the message says which and is safe to show (no key in it)."""
