"""The checks a draft passes before it may be approved, each with its reason.

Run on the edition as a subscriber gets it (the sample recipient's personalized message), so
what is checked is what is sent: the size as sent against Gmail's clip, every link absolute
https, the unsubscribe link and postal address present, the subject's length, nothing left
unrendered, a text part, alt text on every image. The console refuses approval while one
fails, unless an admin overrides it with a written reason (audited).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from sqlmodel import Session

from newsletter.config import Settings
from newsletter.edition.personalization import MessageTemplate
from newsletter.edition.rendering import GMAIL_CLIP_BYTES, SUBJECT_BUDGET, RenderedEdition
from newsletter.publish.drafting import SAMPLE_RECIPIENT, prepare, signer_for
from newsletter.storage import store
from newsletter.storage.models import Edition


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    reason: str


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images_without_alt = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href") is not None:
            self.hrefs.append(values["href"] or "")
        if tag == "img" and not (values.get("alt") or "").strip():
            self.images_without_alt += 1


def preflight(session: Session, *, edition_id: int, settings: Settings) -> list[Check]:
    """Every check, passed or not, in a fixed order."""
    edition = store.get_edition(session, edition_id=edition_id)
    rendered, template, _ = prepare(session, edition=edition, settings=settings)
    return checks_of(edition, rendered, template, settings)


def checks_of(
    edition: Edition, rendered: RenderedEdition, template: MessageTemplate, settings: Settings
) -> list[Check]:
    """:func:`preflight` on an edition already prepared (the draft page renders it once)."""
    html, text = template.preview(SAMPLE_RECIPIENT, signer_for(settings))
    parser = _Links()
    parser.feed(html)
    bad_links = sorted(
        {h for h in parser.hrefs if not (h.startswith(("https://", "#", "mailto:")))}
    )
    unsubscribe = template.unsubscribe_url(signer_for(settings), SAMPLE_RECIPIENT.subscriber_id)
    leftovers = [m for m in ("{{", "{%", rendered.marker) if m in html or m in text]
    size = rendered.html_bytes
    return [
        Check(
            "size",
            rendered.clip_warning is None,
            f"{size:,} bytes as sent; Gmail clips over {GMAIL_CLIP_BYTES:,}"
            + (f" ({rendered.compact_count} compact cards)" if rendered.compact_count else ""),
        ),
        Check(
            "links",
            not bad_links,
            "every link is absolute https"
            if not bad_links
            else f"{len(bad_links)} not absolute https, e.g. {bad_links[0][:80]}",
        ),
        Check(
            "unsubscribe",
            unsubscribe in html and unsubscribe in text,
            "the one-click unsubscribe link is in both parts",
        ),
        Check(
            "postal address",
            settings.postal_address in html and settings.postal_address in text,
            f"{settings.postal_address!r} is in both parts (CAN-SPAM)",
        ),
        Check(
            "subject",
            0 < len(edition.subject) <= SUBJECT_BUDGET,
            f"{len(edition.subject)} characters (phones show about {SUBJECT_BUDGET})",
        ),
        Check(
            "rendered",
            not leftovers,
            "nothing left unrendered"
            if not leftovers
            else f"template syntax left in the message: {', '.join(map(repr, leftovers))}",
        ),
        Check("text part", bool(re.search(r"\w", text)), "a plain-text part for every client"),
        Check(
            "images",
            parser.images_without_alt == 0,
            "every image has alt text"
            if not parser.images_without_alt
            else f"{parser.images_without_alt} image(s) without alt text",
        ),
    ]
