"""Jinja2 + mjml-python + css-inline, once per edition -> :class:`RenderedEdition`.

Per-recipient values are not known here. The templates call ``slot("name")``, which writes a
marker made of a random nonce (so no content can forge one) and the slot name; the markers
survive MJML and CSS inlining unchanged, and ``personalization`` replaces them per recipient.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import css_inline
import mjml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from newsletter.content import ComparisonData
from newsletter.paths import templates_dir
from newsletter.selection import Period
from newsletter.verdicts import ComparisonVerdict, summarize

#: Slots personalization must fill, in every part.
SLOTS = ("greeting_name", "unsubscribe_url")
GMAIL_CLIP_BYTES = 102 * 1024
_COLOR_SCHEME_META = (
    '<meta name="color-scheme" content="light dark">'
    '<meta name="supported-color-schemes" content="light dark">'
)


class RenderError(RuntimeError):
    """A template failed (undefined value, bad MJML); the message names the template."""


@dataclass(frozen=True, slots=True)
class EditionContext:
    """Everything about an edition that is the same for every recipient."""

    edition_id: int
    newsletter_name: str
    period: Period
    items: Sequence[ComparisonData]
    more_count: int
    subject: str
    preheader: str
    web_url: str
    more_url: str
    site_url: str
    postal_address: str


@dataclass(frozen=True, slots=True)
class RenderedEdition:
    """The edition as one HTML and one text body, each with slot markers still in it."""

    subject: str
    preheader: str
    html: str
    text: str
    marker: str  # slot "x" appears as f"{marker}x{marker}" (see slot_token)

    def slot_token(self, name: str) -> str:
        return f"{self.marker}{name}{self.marker}"

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


def _wrap(text: str, width: int = 72, indent: str = "") -> str:
    lines = textwrap.wrap(
        " ".join(str(text).split()),
        width=width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines)


def make_environment(directory: Path | None = None) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(directory or templates_dir())),
        autoescape=select_autoescape(enabled_extensions=("mjml.j2", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = _wrap
    return env


def _inline_css(env: Environment) -> str:
    assert env.loader is not None
    return env.loader.get_source(env, "inline.css")[0]


def period_label(period: Period) -> str:
    start = period.start.astimezone(ZoneInfo(period.timezone))
    return f"Week of {start.day} {start:%B %Y}"


def lead_sentence(count: int, more: int) -> str:
    total = count + more
    noun = "comparison" if total == 1 else "comparisons"
    return f"{total} new {noun} this week, each with the panel's ship-or-skip verdict."


def render_edition(
    ctx: EditionContext, *, env: Environment | None = None, now: datetime | None = None
) -> RenderedEdition:
    """Render the MJML and text templates once; raise :class:`RenderError` on any failure."""
    if not ctx.items:
        raise RenderError("an edition with no comparisons is not rendered")
    env = env or make_environment()
    marker = "nlslot" + secrets.token_hex(6)
    verdicts: list[ComparisonVerdict] = [summarize(c) for c in ctx.items]
    values = {
        "subject": ctx.subject,
        "preheader": ctx.preheader,
        "newsletter_name": ctx.newsletter_name,
        "period_label": period_label(ctx.period),
        "lead": lead_sentence(len(ctx.items), ctx.more_count),
        "items": verdicts,
        "more_count": ctx.more_count,
        "more_url": ctx.more_url,
        "web_url": ctx.web_url,
        "site_url": ctx.site_url,
        "site_host": urlsplit(ctx.site_url).netloc or ctx.site_url,
        "postal_address": ctx.postal_address,
    }

    def slot(name: str) -> Markup:
        if name not in SLOTS:
            raise RenderError(f"unknown slot {name!r}; known: {', '.join(SLOTS)}")
        return Markup(f"{marker}{name}{marker}")

    try:
        source = env.get_template("weekly.mjml.j2").render(values, slot=slot)
        text = env.get_template("weekly.txt.j2").render(values, slot=slot)
    except Exception as exc:  # jinja2 raises many types; name the template stage
        raise RenderError(f"rendering the weekly templates failed: {exc}") from exc
    try:
        html = mjml.mjml2html(source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise RenderError(f"MJML rejected weekly.mjml.j2: {exc}") from exc
    # Inline only our own rules (templates/email/inline.css): inlining MJML's head reset too
    # would repeat ~20 KB of declarations on every table, and the head <style> with the media
    # queries must stay (keep_style_tags). No remote stylesheet is ever fetched.
    html = css_inline.CSSInliner(
        inline_style_tags=False,
        keep_style_tags=True,
        load_remote_stylesheets=False,
        extra_css=_inline_css(env),
    ).inline(html)
    html = html.replace("<head>", "<head>" + _COLOR_SCHEME_META, 1)
    return RenderedEdition(
        subject=ctx.subject, preheader=ctx.preheader, html=html, text=text, marker=marker
    )


def default_subject(newsletter_name: str, items: Sequence[ComparisonData], more: int) -> str:
    """``Name: A vs B (+N more)``: the lead comparison sells the edition."""
    if not items:
        return newsletter_name
    extra = len(items) - 1 + more
    lead = items[0].title
    subject = f"{newsletter_name}: {lead}"
    if len(subject) > 110:
        subject = subject[:109].rsplit(" ", 1)[0] + "…"
    return subject + (f" (+{extra} more)" if extra else "")


def default_preheader(items: Sequence[ComparisonData]) -> str:
    names = [f"{c.tools[0].name} vs {c.tools[1].name}" for c in items[:3]]
    text = "This week: " + "; ".join(names)
    return text if len(text) <= 140 else text[:139].rsplit(" ", 1)[0] + "…"
