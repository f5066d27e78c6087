"""A schedule file, ``schedules/<slug>.toml``, read and validated: the format and its rules.

Each field's rule is declared once, on a pydantic model (:class:`ScheduleFile`); reading a
folder reports every problem of every file together, as ``file: field: what is allowed``,
and never a traceback. :mod:`newsletter.operations.schedules` puts valid files into the
database. The format, with every field::

    slug = "weekly-ai-tool-verdicts"
    name = "Weekly AI Tool Verdicts"
    from = "Weekly AI Tool Verdicts <verdicts@example.com>"
    send = "Monday 09:00"
    timezone = "Europe/Berlin"
    draft_before = "3h"
    approval_required = false
    editors = ["editor@example.com"]
    item_cap = 8
    local_time = false
    writer = "rules"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails

from newsletter.audience.addresses import AddressError, normalize_email
from newsletter.config import WRITER_NAMES
from newsletter.edition.content import SLUG_PATTERN
from newsletter.edition.timing import WeeklyRule, check_zone, parse_duration, parse_rule
from newsletter.errors import NewsletterError


class ScheduleFileError(NewsletterError, ValueError):
    """One or more schedule files are invalid; ``problems`` lists each as file: field: why."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)

    def headline(self) -> str:
        return f"{len(self.problems)} problem(s) in the schedule files"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    path: Path
    slug: str
    name: str
    rule: WeeklyRule
    from_address: str | None = None
    draft_before: timedelta = timedelta(hours=3)
    approval_required: bool = False
    editors: tuple[str, ...] = ()
    item_cap: int = 8
    site_url: str | None = None
    local_time: bool = False
    writer: str | None = None


# --- the fields of a schedule file -----------------------------------------------------------
# Each field's rule is declared once, on its annotation below. A broken rule raises ValueError
# (RuleError and AddressError are ValueErrors) whose text says what is allowed; pydantic
# collects every field's error, so a file's problems are reported together, not one by one.


def _text(max_length: int) -> PlainValidator:
    """A non-empty string without control characters, outer spaces removed, at most
    ``max_length`` characters: the size of the database column it goes into, so ``check``
    refuses everything ``sync`` would."""

    def check(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a non-empty string")
        if len(value.strip()) > max_length:
            raise ValueError(f"at most {max_length} characters")
        if any(ord(c) < 32 for c in value):
            raise ValueError("contains control characters or line breaks")
        return value.strip()

    return PlainValidator(check)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):  # TOML's true and false only, not 1 or "yes"
        raise ValueError("expected true or false")
    return value


def _item_cap(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 50:
        raise ValueError("expected a whole number from 1 to 50")
    return value


def _slug(slug: str, info: ValidationInfo) -> str:
    """A slug, named like its file. Both problems are named in one message: fixing only the
    first would otherwise bring up the second on the next check."""
    stem = (info.context or {}).get("stem")
    wrong = []
    if not re.fullmatch(SLUG_PATTERN, slug):
        wrong.append("is not lower-case letters, digits and hyphens")
    if stem is not None and slug != stem:
        wrong.append(f"differs from the file name ({stem}.toml)")
    if wrong:
        raise ValueError(f"{slug!r} {', and '.join(wrong)}")
    return slug


def _sender(text: str) -> str:
    display, address = parseaddr(text)
    try:
        # Stored with the ASCII form of the address (IDN domain as xn--): it becomes the
        # envelope sender, which SMTP needs in ASCII.
        return formataddr((display, normalize_email(address)[0]))
    except AddressError as exc:
        raise ValueError(f'expected "Name <address>": {exc}') from None


def _rule(send: str, info: ValidationInfo) -> WeeklyRule:
    """The weekly rule in the file's zone. A zone that was refused is named on its own; the
    send time is still read (in UTC), so a wrong one is named in the same check."""
    return parse_rule(send, info.data.get("timezone", "UTC"))


def _lead(text: str) -> timedelta:
    lead = parse_duration(text)
    if lead > timedelta(days=6):
        raise ValueError("at most 6 days (the next send comes after 7)")
    return lead


def _address_list(value: object) -> object:
    # A tuple is the field's default; TOML itself only makes lists.
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of addresses")
    return value


def _editor(raw: str) -> str:
    try:
        return normalize_email(raw)[0]
    except AddressError as exc:
        raise ValueError(f"{raw!r}: {exc}") from None


def _editors(editors: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    """Checked once every address is valid (each bad one is named on its own)."""
    if len(",".join(editors)) > 2000:  # the column they are stored in, comma-separated
        raise ValueError("at most 2000 characters in all")
    if info.data.get("approval_required") and not editors:
        raise ValueError("approval_required needs at least one editor to tell")
    return editors


def _site_url(url: str) -> str:
    if not url.startswith(("https://", "http://")):
        raise ValueError("expected an http(s) URL")
    return url


def _writer(name: str) -> str:
    if name not in WRITER_NAMES:
        raise ValueError(f"{name!r} is not one of {', '.join(WRITER_NAMES)}")
    return name


class ScheduleFile(BaseModel):
    """A schedule file's fields as validated, in the order its problems are listed. Fields
    that read another field's value come after it (``send`` after ``timezone``, ``editors``
    after ``approval_required``). Validate with ``context={"stem": <file name without .toml>}``
    to check the slug against its file's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: Annotated[str, _text(120), AfterValidator(_slug)] = Field(
        description="the newsletter's slug (lower-case letters, digits, hyphens)"
    )
    name: Annotated[str, _text(200)] = Field(description="the newsletter's name")
    from_address: Annotated[str | None, _text(320), AfterValidator(_sender)] = Field(
        default=None, alias="from", description='sender, "Name <address>"'
    )
    timezone: Annotated[str, _text(64), AfterValidator(check_zone)] = Field(
        description="IANA time zone of the send time"
    )
    send: Annotated[WeeklyRule, _text(500), AfterValidator(_rule)] = Field(
        description='weekday and local time, "Monday 09:00"'
    )
    draft_before: Annotated[timedelta, _text(500), AfterValidator(_lead)] = Field(
        default=timedelta(hours=3),
        description='how long before the send the draft is assembled, "3h" (default)',
    )
    approval_required: Annotated[bool, PlainValidator(_flag)] = Field(
        default=False, description="an editor must approve before it goes out (default false)"
    )
    editors: Annotated[
        tuple[Annotated[str, AfterValidator(_editor)], ...],
        BeforeValidator(_address_list),
        AfterValidator(_editors),
    ] = Field(
        default=(),
        validate_default=True,  # approval_required without editors is refused
        description="addresses told when an edition waits for approval",
    )
    item_cap: Annotated[int, PlainValidator(_item_cap)] = Field(
        default=8, description="most comparisons in one edition (default 8)"
    )
    site_url: Annotated[str | None, _text(500), AfterValidator(_site_url)] = Field(
        default=None,
        description="the review site for the footer and the more link (optional)",
    )
    local_time: Annotated[bool, PlainValidator(_flag)] = Field(
        default=False,
        description="deliver at the send time in each subscriber's own zone (default false)",
    )
    writer: Annotated[str | None, _text(500), AfterValidator(_writer)] = Field(
        default=None,
        description="who writes verdict and intro suggestions: rules, claude or huggingface "
        "(default: NEWSLETTER_WRITER)",
    )

    def spec(self, path: Path) -> ScheduleSpec:
        return ScheduleSpec(
            path=path,
            slug=self.slug,
            name=self.name,
            rule=self.send,
            from_address=self.from_address,
            draft_before=self.draft_before,
            approval_required=self.approval_required,
            editors=self.editors,
            item_cap=self.item_cap,
            site_url=self.site_url,
            local_time=self.local_time,
            writer=self.writer,
        )


#: What each field of a schedule file means, by its name in the file.
FIELDS = {
    info.alias or name: info.description or "" for name, info in ScheduleFile.model_fields.items()
}


def load(directory: Path) -> list[ScheduleSpec]:
    """Every ``*.toml`` in ``directory``, validated; :class:`ScheduleFileError` with every
    problem of every file otherwise."""
    if not directory.is_dir():
        raise ScheduleFileError([f"{directory}: no such folder"])
    specs: list[ScheduleSpec] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        spec, found = parse_file(path)
        problems += found
        if spec is not None:
            specs.append(spec)
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.slug in seen:
            problems.append(
                f"{spec.path.name}: slug: {spec.slug!r} is also in {seen[spec.slug].name}"
            )
        seen[spec.slug] = spec.path
    if problems:
        raise ScheduleFileError(problems)
    return specs


def parse_file(path: Path) -> tuple[ScheduleSpec | None, list[str]]:
    """The spec of one file, or None and its problems (all of them, not just the first)."""
    label = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{label}: can't read: {exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{label}: not valid TOML: {exc}"]
    except RecursionError:
        return None, [f"{label}: not valid TOML: nested too deeply"]
    try:
        fields = ScheduleFile.model_validate(data, context={"stem": path.stem})
    except ValidationError as exc:
        # Unknown fields first: a misspelt name often explains a "missing" one.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        return None, [f"{label}: {e['loc'][0]}: {_why(e)}" for e in errors]
    return fields.spec(path), []


def _why(error: ErrorDetails) -> str:
    """What is allowed, in the words of the field's rule (its ValueError) where it has one."""
    if error["type"] == "extra_forbidden":
        return f"unknown field; known: {', '.join(FIELDS)}"
    if error["type"] == "missing":
        return "missing"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return error["msg"]
