"""Rendering: seed content in both parts, hostile content escaped, size, once per edition."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import mjml
import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.config import Settings
from newsletter.edition.content import ComparisonData
from newsletter.edition.rendering import (
    CLIP_BUDGET,
    GMAIL_CLIP_BYTES,
    EditionContext,
    RenderError,
    make_environment,
    render_edition,
)
from newsletter.edition.timing import week_containing
from newsletter.edition.verdicts import summarize
from newsletter.storage import store

SEED_SLUG = "claude-4-api-tool-use-streaming-vs-hugging-face-inference-providers"
LONG_NAME = "Supercalifragilistic" * 15  # 300 characters, no space to break at
RTL = "أداة الذكاء الاصطناعي للمطورين"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def visible_text(page: str) -> str:
    body = page[page.index("<body") :]
    return " ".join(" ".join(parse(body).text).split())


def test_seed_comparison_in_html_and_text(seeded: Session, settings: Settings, draft: int) -> None:
    """The seed's email states the call, who each tool is for, and reasons drawn from its
    reviews, with their lenses, in both parts."""
    page, text, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    seen_html, seen_text = visible_text(page), " ".join(text.split())
    seed = summarize(store.get_comparison(seeded, slug=SEED_SLUG))
    assert "Both ship, for different jobs" in seen_html and "Both ship, for different jobs" in text
    assert seed.call.detail in seen_html and seed.call.detail in seen_text
    for tool in seed.tools:
        for value in (tool.name, tool.tagline, tool.panel, tool.entry_price, tool.description):
            assert value in seen_html, value
            assert value in seen_text or value == tool.description, value
        assert tool.reason_for is not None and tool.reason_against is not None
        for quote in (tool.reason_for, tool.reason_against):
            assert f"“{quote.text}” {quote.lens_name}" in seen_html
            assert f'"{quote.text}" ({quote.lens_name})' in seen_text
        assert f"Best for {tool.for_whom}" in seen_html
    assert "Community: no votes yet" in seen_html and "Community: no votes yet" in seen_text
    assert "Read the full comparison" in seen_html
    assert seed.comparison.url in text and html.escape(seed.comparison.url) in page
    assert "Hi Sample Reader," in seen_html and "Hi Sample Reader," in text
    assert rendered.html_bytes < CLIP_BUDGET and rendered.compact_count == 0


def test_email_furniture(seeded: Session, settings: Settings, draft: int) -> None:
    page, text, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert '<meta name="color-scheme" content="light dark">' in page
    assert "prefers-color-scheme: dark" in page
    assert "fonts.googleapis" not in page and "<link" not in page  # no remote fonts
    assert all(attrs.get("alt") for tag, attrs in parse(page).tags if tag == "img")
    footer = visible_text(page)[-500:]
    assert "You are receiving this because you subscribed to Weekly AI Tool Verdicts" in footer
    assert settings.postal_address in footer and "Unsubscribe" in footer
    assert "Manage your subscription" in footer and "Forwarded this?" in footer
    links = [a.get("href", "") for t, a in parse(page).tags if t == "a"]
    unsubscribe = [h for h in links if h and h.startswith(f"{settings.base_url}/u/")]
    assert len(unsubscribe) == 2 and len(set(unsubscribe)) == 1  # manage and unsubscribe
    assert f"{settings.base_url}/subscribe" in links
    assert f"Manage your subscription or unsubscribe in one click:\n{unsubscribe[0]}" in text
    assert f"{settings.base_url}/archive/{draft}" in page
    # Four comparisons: the contents link to each card, with its call.
    anchors = [h for h in links if h and h.startswith("#c")]
    assert anchors == ["#c1", "#c2", "#c3", "#c4"]
    ids = [a.get("id") for _, a in parse(page).tags if (a.get("id") or "").startswith("c")]
    assert ids == ["c1", "c2", "c3", "c4"]
    assert re.search(r"\d+ min read", visible_text(page))


def test_the_preheader_is_hidden_the_accepted_way_and_summarizes_the_picks(
    seeded: Session, settings: Settings, draft: int
) -> None:
    page, _, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    hidden = re.search(r'<div class="preheader" style="([^"]*)">([^<]*)<', page)
    assert hidden, "no preheader"
    style = hidden.group(1)
    assert "display:none" in style and "max-height:0" in style and "mso-hide:all" in style
    assert "color" not in style and "font-size" not in style and "opacity" not in style
    assert hidden.group(2).startswith(rendered.preheader)
    assert rendered.preheader.startswith("Ship Patchwright Agent · Ship Lumora Studio 3")
    assert rendered.preheader != rendered.subject and len(rendered.preheader) <= 140


def test_the_plain_text_part_wraps_at_78_and_numbers_its_links(
    seeded: Session, settings: Settings, draft: int
) -> None:
    _, text, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    long = [line for line in text.splitlines() if len(line) > 78 and "://" not in line]
    assert not long, long
    notes = re.findall(r"^\[(\d+)\] (https?://\S+)$", text, flags=re.M)
    assert [int(n) for n, _ in notes] == list(range(1, len(notes) + 1))
    assert len(notes) >= 6  # four comparisons, subscribe, the web version
    seed_url = store.get_comparison(seeded, slug=SEED_SLUG).url
    number = next(n for n, url in notes if url == seed_url)
    assert f"[{number}]" in text.split("Links:")[0]


def _hostile(make: Callable[..., ComparisonData], i: int) -> ComparisonData:
    record = make(f"hostile-{i}", title=f'<script>alert({i})</script> "quoted" title {i}')
    tools = [
        record.tools[0].model_copy(
            update={
                "name": LONG_NAME,
                "tagline": '" onmouseover="alert(1)" data-x=\'y\' <b>bold</b>',
                "entry_price": "Free 🚀",
            }
        ),
        record.tools[1].model_copy(update={"name": RTL, "tagline": "Emoji 🤖✨ and RTL " + RTL}),
    ]
    return record.model_copy(update={"tools": tools, "id": i})


def hostile_context(make: Callable[..., ComparisonData], n: int = 8) -> EditionContext:
    items = [_hostile(make, i) for i in range(n)]
    return EditionContext(
        edition_id=1,
        newsletter_name="Weekly <AI> Tool Verdicts",
        period=week_containing(datetime(2026, 11, 25, tzinfo=UTC), "UTC"),
        items=items,
        more_count=3,
        subject='Subject with "quotes" & <tags>',
        preheader="Preheader <i>x</i>",
        web_url="https://news.example.com/archive/1?a=1&b=2",
        more_url="https://aitoolverdicts.example",
        site_url="https://aitoolverdicts.example",
        postal_address="1 <Main> St",
    )


def test_hostile_content_is_escaped_and_stays_under_the_clip_limit(
    make_comparison: Callable[..., ComparisonData],
) -> None:
    rendered = render_edition(hostile_context(make_comparison))
    page = rendered.html
    assert "<script" not in page
    assert "&lt;script&gt;alert(0)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    parsed = parse(page)
    assert not any(k.startswith("on") for _, attrs in parsed.tags for k in attrs)
    assert not any("data-x" in attrs for _, attrs in parsed.tags)
    text = visible_text(page)
    assert LONG_NAME in text and RTL in text and "🤖✨" in text and "Free 🚀" in text
    assert '" onmouseover="alert(1)" data-x=\'y\' <b>bold</b>' in text  # shown, not obeyed
    assert "Weekly <AI> Tool Verdicts" in text and "1 <Main> St" in text
    # The text part is text/plain: not escaped, but complete.
    assert "<script>alert(0)</script>" in rendered.text and LONG_NAME in rendered.text
    assert rendered.html_bytes < GMAIL_CLIP_BYTES, rendered.html_bytes


def test_long_names_can_wrap(make_comparison: Callable[..., ComparisonData]) -> None:
    """Every text cell allows breaking inside a word (the 375 px check is in test_browser)."""
    page = render_edition(hostile_context(make_comparison, 1)).html
    cells = re.findall(r'<td class="wrap"[^>]*style="([^"]*)"', page)
    assert cells and all("overflow-wrap:anywhere" in c for c in cells)


def test_strict_undefined_names_the_problem(tmp_path: Path, make_comparison: Any) -> None:
    (tmp_path / "weekly.mjml.j2").write_text("<mjml><mj-body>{{ nope }}</mj-body></mjml>")
    (tmp_path / "weekly.txt.j2").write_text("x")
    (tmp_path / "inline.css").write_text("")
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render_edition(hostile_context(make_comparison, 1), env=make_environment(tmp_path))


def test_empty_edition_is_not_rendered(make_comparison: Any) -> None:
    ctx = hostile_context(make_comparison, 1)
    with pytest.raises(RenderError, match="no comparisons"):
        render_edition(
            EditionContext(**{**{f: getattr(ctx, f) for f in ctx.__slots__}, "items": []})
        )


def test_mjml_runs_once_per_edition_not_per_recipient(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_subscribers(25)
    calls = 0
    real = mjml.mjml2html

    def counting(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(mjml, "mjml2html", counting)
    from newsletter.backends.memory import MemoryBackend, outbox

    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=MemoryBackend())
    assert len(outbox) == 25 and calls == 2  # the email and its web version, once each
