"""Jinja2 + mjml-python + css-inline, once per edition -> :class:`RenderedEdition`.

Per-recipient values are not known here. The templates call ``slot("name")``, which writes a
marker made of a random nonce (so no content can forge one) and the slot name; the markers
survive MJML and CSS inlining unchanged, and ``personalization`` replaces them per recipient.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import css_inline
import mjml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from newsletter.edition.content import ComparisonData
from newsletter.edition.message import qp_encode
from newsletter.edition.timing import Period
from newsletter.edition.verdicts import (
    ComparisonVerdict,
    WrittenCall,
    excerpt,
    short_name,
    summarize,
    with_written,
)
from newsletter.errors import NewsletterError
from newsletter.paths import templates_dir

#: Slots personalization must fill, in every part.
SLOTS = ("greeting_name", "unsubscribe_url")
GMAIL_CLIP_BYTES = 102 * 1024
#: The HTML as sent must stay under this: Gmail's 102 KB less room for what personalization
#: adds (the name, the signed links: about 600 bytes) and a margin for the headers' share.
CLIP_BUDGET = GMAIL_CLIP_BYTES - 4 * 1024
_COLOR_SCHEME_META = (
    '<meta name="color-scheme" content="light dark">'
    '<meta name="supported-color-schemes" content="light dark">'
)


class RenderError(NewsletterError, RuntimeError):
    """A template failed (undefined value, bad MJML); the message names the template."""


@dataclass(frozen=True, slots=True)
class MoreLink:
    """A comparison past the edition's cap, named with its link in "Also this week"."""

    title: str
    url: str


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
    base_url: str = ""
    more: Sequence[MoreLink] = ()
    newsletter_slug: str = ""
    #: An editor's words for this edition, under the greeting.
    intro: str = ""
    #: Written verdicts an editor accepted for this edition, by comparison id.
    written: Mapping[int, WrittenCall] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RenderedEdition:
    """The edition as one HTML and one text body, each with slot markers still in it, and the
    web version (no slots, no personal links)."""

    subject: str
    preheader: str
    html: str
    text: str
    marker: str  # slot "x" appears as f"{marker}x{marker}" (see slot_token)
    web_html: str = ""
    #: Comparisons shown as compact lines instead of cards to stay under Gmail's clip.
    compact_count: int = 0

    def slot_token(self, name: str) -> str:
        return f"{self.marker}{name}{self.marker}"

    @property
    def html_bytes(self) -> int:
        """The HTML part as it is sent (quoted-printable), which is what Gmail measures."""
        return len(qp_encode(self.html))

    @property
    def clip_warning(self) -> str | None:
        """Why this edition would be clipped by Gmail, or None."""
        if self.html_bytes <= CLIP_BUDGET:
            return None
        return (
            f"the HTML is {self.html_bytes:,} bytes as sent, over the {CLIP_BUDGET:,} that stay "
            f"clear of Gmail's {GMAIL_CLIP_BYTES // 1024} KB clip even with every card compact; "
            "lower the newsletter's item cap"
        )

    @property
    def clip_note(self) -> str | None:
        """What an editor should know about size: compact cards, or a clip."""
        if self.clip_warning:
            return self.clip_warning
        if self.compact_count:
            return (
                f"{self.compact_count} comparison(s) shown as compact lines, not cards, to keep "
                f"the HTML under Gmail's {GMAIL_CLIP_BYTES // 1024} KB clip "
                f"({self.html_bytes:,} bytes as sent)"
            )
        return None


def _wrap(text: str, width: int = 78, indent: str = "", first: str = "") -> str:
    """Plain text wrapped at ``width`` columns, ``first`` before the first line and ``indent``
    before the others; a URL or other long word is never broken."""
    lines = textwrap.wrap(
        " ".join(str(text).split()),
        width=width,
        initial_indent=first,
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


def lead_sentence(count: int) -> str:
    noun = "comparison" if count == 1 else "comparisons"
    return f"{count} new {noun} this week. Here is the call on each, with the panel's reasons."


#: Spacers after the preheader so clients don't fill the preview with the body's first words.
_PREHEADER_PADDING = Markup("&#847;&zwnj;&nbsp;" * 12)
#: Words a minute for the reading-time estimate.
READING_WPM = 230


def render_edition(
    ctx: EditionContext, *, env: Environment | None = None, now: datetime | None = None
) -> RenderedEdition:
    """Render the MJML and text templates once; raise :class:`RenderError` on any failure.

    Comparisons are cards; when the HTML as sent would pass :data:`CLIP_BUDGET` (Gmail clips
    at 102 KB), the last cards become compact lines (title, link, the call) until it fits.
    """
    if not ctx.items:
        raise RenderError("an edition with no comparisons is not rendered")
    env = env or make_environment()
    marker = "nlslot" + secrets.token_hex(6)
    verdicts = verdicts_of(ctx)
    full = len(verdicts)
    html, text, web_source = _render(ctx, env, marker, verdicts, full)
    size = len(qp_encode(html))
    while size > CLIP_BUDGET and full > 0:
        per_card = max(1, size // (full + 1))
        full = max(0, full - max(1, -(-(size - CLIP_BUDGET) // per_card)))
        html, text, web_source = _render(ctx, env, marker, verdicts, full)
        size = len(qp_encode(html))
    return RenderedEdition(
        subject=ctx.subject,
        preheader=ctx.preheader,
        html=html,
        text=text,
        marker=marker,
        web_html=_html(web_source, env),  # MJML for the web version once, at the final size
        compact_count=len(verdicts) - full,
    )


def _render(
    ctx: EditionContext,
    env: Environment,
    marker: str,
    verdicts: Sequence[ComparisonVerdict],
    full: int,
) -> tuple[str, str, str]:
    """(html, text, the web version's MJML source) with the first ``full`` comparisons as
    cards; the web version is converted by the caller, once the size is settled."""
    items, compact = list(verdicts[:full]), list(verdicts[full:])
    base = ctx.base_url.rstrip("/")
    values = {
        "subject": ctx.subject,
        "preheader": ctx.preheader,
        "preheader_padding": _PREHEADER_PADDING,
        "newsletter_name": ctx.newsletter_name,
        "newsletter_slug": ctx.newsletter_slug,
        "period_label": period_label(ctx.period),
        "lead": lead_sentence(len(verdicts) + ctx.more_count),
        "intro": ctx.intro,
        "items": items,
        "compact": compact,
        "contents": items if len(verdicts) >= 3 and items else [],
        "all_items": list(verdicts),
        "more": list(ctx.more),
        "more_count": ctx.more_count,
        "more_url": ctx.more_url,
        "web_url": ctx.web_url,
        "site_url": ctx.site_url,
        "site_host": urlsplit(ctx.site_url).netloc or ctx.site_url,
        "subscribe_url": f"{base}/subscribe",
        "archive_url": f"{base}/archive",
        "postal_address": ctx.postal_address,
        "reading_minutes": 1,
        "web": False,
    }

    def slot(name: str) -> Markup:
        if name not in SLOTS:
            raise RenderError(f"unknown slot {name!r}; known: {', '.join(SLOTS)}")
        return Markup(f"{marker}{name}{marker}")

    links: list[str] = []

    def note(url: str) -> str:
        """A numbered footnote for ``url`` in the text part (each URL numbered once)."""
        if url not in links:
            links.append(url)
        return f"[{links.index(url) + 1}]"

    try:
        text = env.get_template("weekly.txt.j2").render(
            values, slot=slot, note=note, notes=lambda: links
        )
        values["reading_minutes"] = max(1, round(len(text.split()) / READING_WPM))
        source = env.get_template("weekly.mjml.j2").render(values, slot=slot)
        web_source = env.get_template("weekly.mjml.j2").render({**values, "web": True}, slot=slot)
    except Exception as exc:  # jinja2 raises many types; name the template stage
        raise RenderError(f"rendering the weekly templates failed: {exc}") from exc
    return _html(source, env), text, web_source


def _html(source: str, env: Environment) -> str:
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
        minify_css=True,  # "color:#1f2328" not "color: #1f2328": 10% of every style attribute
    ).inline(html)
    return html.replace("<head>", "<head>" + _COLOR_SCHEME_META, 1)


#: A subject longer than this is cut off on phones and in most inbox lists (measured: iOS Mail
#: and Gmail's app show 70-80 characters at 375 px).
SUBJECT_BUDGET = 78
PREHEADER_BUDGET = 140


def default_subject(items: Sequence[ComparisonData], more: int) -> str:
    """The lead comparison, "+N more" for the rest, within :data:`SUBJECT_BUDGET`.

    No newsletter-name prefix (the From name says it). Never cut mid-word or mid-title: a
    title that doesn't fit gives way to the short tool names ("Claude 4 API vs Hugging Face"),
    and those to a plain line.
    """
    if not items:
        return "This week's AI tool verdicts"
    extra = len(items) - 1 + more
    suffix = f" (+{extra} more)" if extra else ""
    lead = items[0]
    names = f"{short_name(lead.tools[0].name)} vs {short_name(lead.tools[1].name)}"
    for candidate in (lead.title, names):
        if len(candidate) + len(suffix) <= SUBJECT_BUDGET:
            return candidate + suffix
    count = len(items) + more
    return f"{count} new AI tool {'verdict' if count == 1 else 'verdicts'} this week"


def verdicts_of(ctx: EditionContext) -> list[ComparisonVerdict]:
    """Each comparison's call as this edition shows it: the rules', an editor's, or a written
    verdict an editor accepted."""
    return [
        with_written(summarize(c), ctx.written[c.id])
        if c.id is not None and c.id in ctx.written
        else summarize(c)
        for c in ctx.items
    ]


def default_preheader(items: Sequence[ComparisonData], subject: str = "") -> str:
    """The week's calls ("Ship Patchwright Agent · Both ship: ...") within
    :data:`PREHEADER_BUDGET`, whole calls only; never a repeat of the subject."""
    calls: list[str] = []
    for verdict in (summarize(c) for c in items):
        call = verdict.call
        if call.kind == "both":
            a, b = verdict.tools
            calls.append(f"Both ship: {a.short_name} and {b.short_name}")
        elif call.kind == "editor":
            calls.append(f"{verdict.tools[0].short_name} vs {verdict.tools[1].short_name}")
        else:
            calls.append(call.headline)
    if len(calls) == 1:  # one comparison: the subject names it, so say who it is for
        only = summarize(items[0])
        detail = only.call.detail or only.call.why
        calls = [f"{calls[0]}. {detail}"]
    text = ""
    for line in calls:
        joined = f"{text} · {line}" if text else line
        if len(joined) > PREHEADER_BUDGET:
            break
        text = joined
    if not text:
        text = excerpt(calls[0], PREHEADER_BUDGET)
    return text if text != subject else f"The panel's call on {subject}"
