"""Gmail clips an HTML part over 102 KB as it arrives (quoted-printable), hiding the footer
and its unsubscribe link. The guard measures the encoded part; an edition that would pass the
budget turns its last cards into compact lines, and says so at draft and approval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.config import Settings
from newsletter.edition import rendering
from newsletter.edition.message import qp_encode

from .conftest import EXAMPLES, SECRET

AT = datetime(2026, 11, 25, 12, tzinfo=UTC)
LARGEST_CAP = Settings.model_fields["item_cap"].metadata[1].le  # the largest cap allowed


def _week_of(count: int) -> dict[str, Any]:
    """``count`` comparisons published in the example week, cycling through the examples."""
    base = json.loads(EXAMPLES.read_text())["comparisons"]
    records = []
    for i in range(count):
        record = dict(base[i % len(base)])
        record["slug"] = f"{record['slug']}-{i}"
        record["url"] = f"{record['url']}-{i}"
        record["published_at"] = (AT - timedelta(hours=1 + i)).isoformat()
        records.append(record)
    return {"comparisons": records}


def _draft(session: Session, settings: Settings, tmp_path: Path, count: int, cap: int) -> int:
    path = tmp_path / "week.json"
    path.write_text(json.dumps(_week_of(count)))
    newsletter = publish.default_newsletter(session, settings)
    newsletter.item_cap = cap
    session.commit()
    importing.import_comparisons(session, path=path)
    session.commit()
    draft = publish.draft_edition(session, settings=settings, newsletter_slug=None, at=AT)
    return draft.edition.id or 0


def test_the_size_is_measured_as_sent() -> None:
    html = '<p style="color:#1f2328">' + "é = x " * 2000 + "</p>"
    assert len(qp_encode(html)) > len(html.encode()) * 1.3  # "=" and "é" grow when encoded


def test_the_largest_cap_stays_under_the_clip_with_compact_cards(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    assert LARGEST_CAP == 50
    edition_id = _draft(session, settings, tmp_path, LARGEST_CAP, LARGEST_CAP)
    page, text, rendered = publish.preview_edition(
        session, edition_id=edition_id, settings=settings
    )
    assert rendered.html_bytes <= rendering.CLIP_BUDGET < rendering.GMAIL_CLIP_BYTES
    assert 0 < rendered.compact_count < LARGEST_CAP
    assert rendered.clip_warning is None
    assert rendered.clip_note is not None and "compact lines" in rendered.clip_note
    # Every comparison is still in the email: cards first, then named compact lines.
    assert page.count('class="callbox"') == LARGEST_CAP - rendered.compact_count
    assert page.count("-49") >= 1 and "Also this week" in page
    # The footer, with the unsubscribe link, is inside what Gmail shows.
    assert page.rfind("Unsubscribe") > 0


def test_a_normal_week_has_every_card(session: Session, settings: Settings, tmp_path: Path) -> None:
    edition_id = _draft(session, settings, tmp_path, 8, 8)
    _, _, rendered = publish.preview_edition(session, edition_id=edition_id, settings=settings)
    assert rendered.compact_count == 0 and rendered.clip_note is None


def test_past_the_cap_the_rest_are_named_with_their_links(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    edition_id = _draft(session, settings, tmp_path, 6, 3)
    page, text, _ = publish.preview_edition(session, edition_id=edition_id, settings=settings)
    more = _week_of(6)["comparisons"][3:]
    for record in more:
        assert f'href="{record["url"]}"' in page and record["title"] in page
        assert record["url"] in text
    assert "more comparisons this week" not in page


def test_when_nothing_fits_the_guard_says_why(
    session: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendering, "CLIP_BUDGET", 8_000)
    edition_id = _draft(session, settings, tmp_path, 8, 8)
    _, _, rendered = publish.preview_edition(session, edition_id=edition_id, settings=settings)
    assert rendered.compact_count == 8
    assert rendered.clip_warning is not None
    assert "lower the newsletter's item cap" in rendered.clip_warning


def test_draft_and_approve_warn_about_compact_cards(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{db}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_ITEM_CAP="50",
        COLUMNS="200",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    path = tmp_path / "week.json"
    path.write_text(json.dumps(_week_of(50)))
    assert cli("db", "upgrade").returncode == 0
    assert cli("import", "comparisons", str(path)).returncode == 0
    draft = cli("edition", "draft", "--at", AT.isoformat())
    assert draft.returncode == 0, draft.stderr
    assert "warning:" in draft.stderr and "compact lines" in draft.stderr
    approved = cli("edition", "approve", draft.stdout.strip())
    assert approved.returncode == 0, approved.stderr
    assert "compact lines" in approved.stderr
