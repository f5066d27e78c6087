"""The typed content values that flow between stages: a comparison, its two tools, their reviews.

These are both the import format (validated from JSON) and what the store hands to selection,
verdicts and rendering, so one set of rules decides what a valid comparison is.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(max_length: int) -> StringConstraints:
    """The rule of a text field, for ``Annotated[str, _text(n)]``: outer spaces removed, then
    not empty and at most ``max_length`` characters. It returns the constraint, not the type,
    so each field is an ``Annotated`` type the type checker reads as ``str``."""
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)


ShortText = Annotated[str, _text(500)]
LongText = Annotated[str, _text(20_000)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: object) -> object:
        if isinstance(value, str) and _CONTROL.search(value):
            raise ValueError("contains control characters")
        return value


class Votes(_Frozen):
    """Community up/down votes on one tool."""

    up: StrictInt = Field(ge=0, le=2**31 - 1)
    down: StrictInt = Field(ge=0, le=2**31 - 1)

    @property
    def total(self) -> int:
        return self.up + self.down


class ReviewData(_Frozen):
    """One panel reviewer's verdict on one tool, through one lens."""

    lens: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z-]{0,39}$", to_lower=True)] = Field(
        description="builder, skeptic, futurist, buyer, or another lower-case word"
    )
    verdict: Literal["ship", "skip"]
    quote: LongText

    @field_validator("lens", "verdict", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class ToolData(_Frozen):
    """One side of a comparison."""

    name: Annotated[str, _text(300)]
    category: Annotated[str, _text(120)]
    tagline: ShortText
    description: LongText
    entry_price: Annotated[str, _text(120)] = Field(
        description='"Free", "Paid", "Freemium" or free text such as "From $20/mo"'
    )
    editor_summary: Annotated[str, _text(300)] | None = Field(
        default=None,
        description="Optional one-line take on the tool written by an editor, shown in full; "
        "at most 300 characters",
    )
    community: Votes | None = Field(default=None, description="null when nobody voted yet")
    reviews: list[ReviewData] = Field(default_factory=list, max_length=40)


class ComparisonData(_Frozen):
    """A comparison page: two tools side by side with the panel's and community's verdicts."""

    #: The store's id; set by the store, refused in import files.
    id: SkipJsonSchema[int | None] = Field(default=None, exclude=True)
    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=120)]
    title: ShortText
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s<>\"']+$", max_length=2000)]
    published_at: AwareDatetime
    question: ShortText = "Which one should you ship with?"
    intro: Annotated[str, _text(2000)] | None = None
    verdict: Annotated[str, _text(280)] | None = Field(
        default=None,
        description="An editor's own call on the comparison (\"Ship Claude for agents; HF "
        'for routing"), shown in full instead of the computed one; at most 280 characters',
    )
    tools: list[ToolData] = Field(min_length=2, max_length=2, description="exactly two tools")

    @field_validator("published_at", mode="before")
    @classmethod
    def _iso_text_only(cls, value: object) -> object:
        # pydantic would also take a Unix timestamp; an ISO 8601 string with an offset is the
        # documented format, and a bare number is more likely a mistake than a date.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError("expected an ISO 8601 date-time string with an offset")
        return value


def fingerprint(comparison: ComparisonData) -> str:
    """A digest of what a reader would see of ``comparison`` (everything but the store's id):
    equal digests, equal content. Drafts keep it per item to tell an editor what changed in
    the store since they looked, and to refuse sending an approved edition whose content
    changed under the approval."""
    payload = comparison.model_dump_json().encode()
    return hashlib.sha256(payload).hexdigest()


class ComparisonFile(BaseModel):
    """The top level of an import file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    comparisons: list[ComparisonData]
