"""What editors use before approving: the preflight checks and "send me a test"."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from newsletter import publish
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.storage import store
from newsletter.storage.models import Delivery, Subscriber

from .conftest import PINNED_DATE


def _checks(seeded: Session, settings: Settings, draft: int) -> dict[str, publish.Check]:
    return {c.name: c for c in publish.preflight(seeded, edition_id=draft, settings=settings)}


def test_the_example_draft_passes_preflight(
    seeded: Session, settings: Settings, draft: int
) -> None:
    checks = _checks(seeded, settings, draft)
    assert list(checks) == [
        "size",
        "links",
        "unsubscribe",
        "postal address",
        "subject",
        "rendered",
        "text part",
        "images",
    ]
    failing = [c for c in checks.values() if not c.ok]
    assert not failing, failing
    assert "bytes as sent" in checks["size"].reason


def test_preflight_catches_http_links_and_a_long_subject(
    seeded: Session, settings: Settings, draft: int
) -> None:
    plain = settings.model_copy(update={"base_url": "http://news.example.com"})
    checks = _checks(seeded, plain, draft)
    assert not checks["links"].ok and "http://news.example.com" in checks["links"].reason
    publish.set_subject(seeded, edition_id=draft, subject="A subject " * 10)
    assert not _checks(seeded, settings, draft)["subject"].ok


def test_a_test_send_is_the_subscribers_email_marked_and_recorded_nowhere(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    people = add_subscribers(2, prefix="reader")
    reader = people[1]  # "Reader 1"
    results = publish.send_test(
        seeded,
        edition_id=draft,
        settings=settings,
        to=["editor@example.com", "Chief@Example.com"],
        as_subscriber=reader.email,
        backend=memory.MemoryBackend(),
        now=PINNED_DATE,
    )
    assert [address for address, _ in results] == ["editor@example.com", "Chief@example.com"]
    assert all(result.status.delivered for _, result in results)
    assert [m.recipient for m in memory.outbox] == ["editor@example.com", "Chief@example.com"]
    message = message_from_bytes(memory.outbox[0].data)
    edition = store.get_edition(seeded, edition_id=draft)
    assert message["Subject"] == f"[TEST] {edition.subject}"
    part = message.get_payload(0)
    assert isinstance(part, Message)
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert "Hi Reader 1," in body  # as that subscriber gets it
    # Its own Message-ID and idempotency key: never mistaken for the real one later.
    assert message["Message-ID"].startswith("<test.")
    assert memory.outbox[0].key.startswith("test-")
    assert seeded.exec(select(func.count()).select_from(Delivery)).one() == 0
    assert store.edition_status(seeded, edition_id=draft) == "draft"


@pytest.mark.parametrize(
    ("to", "as_subscriber", "words"),
    [
        ([], None, "1 to 10 addresses"),
        ([f"t{i}@example.com" for i in range(11)], None, "1 to 10 addresses"),
        (["not an address"], None, "to: 'not an address'"),
        (["editor@example.com"], "nobody@example.com", "no subscriber 'nobody@example.com'"),
    ],
)
def test_a_test_send_refuses_bad_input_and_sends_nothing(
    seeded: Session,
    settings: Settings,
    draft: int,
    to: list[str],
    as_subscriber: str | None,
    words: str,
) -> None:
    with pytest.raises(publish.TestSendError, match=words):
        publish.send_test(
            seeded,
            edition_id=draft,
            settings=settings,
            to=to,
            as_subscriber=as_subscriber,
            backend=memory.MemoryBackend(),
            now=PINNED_DATE,
        )
    assert memory.outbox == []


def test_an_editor_drops_moves_and_restores_and_a_refresh_keeps_the_drop(
    seeded: Session, settings: Settings, draft: int
) -> None:
    from datetime import UTC, datetime

    items = store.edition_comparisons(seeded, edition_id=draft)
    lead, second = items[0], items[1]
    publish.drop_item(seeded, edition_id=draft, comparison_id=lead.id or 0)
    seeded.commit()
    after = store.edition_comparisons(seeded, edition_id=draft)
    assert lead.id not in [c.id for c in after] and len(after) == len(items) - 1
    edition = store.get_edition(seeded, edition_id=draft)
    assert edition.subject.startswith(second.title)  # the subject follows the new lead
    # Refreshing the draft from the store leaves the dropped comparison out.
    publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert lead.id not in [c.id for c in store.edition_comparisons(seeded, edition_id=draft)]
    assert publish.dropped_comparisons(seeded, edition=edition) == [(lead.id, lead.title)]
    publish.move_item(seeded, edition_id=draft, comparison_id=after[1].id or 0, up=True)
    moved = store.edition_comparisons(seeded, edition_id=draft)
    assert [c.id for c in moved[:2]] == [after[1].id, after[0].id]
    publish.restore_item(seeded, edition_id=draft, comparison_id=lead.id or 0)
    seeded.commit()
    restored = store.edition_comparisons(seeded, edition_id=draft)
    assert restored[-1].id == lead.id and len(restored) == len(items)


def test_the_intro_shows_in_both_parts_and_an_approved_draft_is_fixed(
    seeded: Session, settings: Settings, draft: int
) -> None:
    from datetime import UTC, datetime

    publish.set_intro(seeded, edition_id=draft, intro="A quiet week: four tools, one surprise.")
    seeded.commit()
    html, text, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "A quiet week: four tools, one surprise." in html
    assert "A quiet week: four tools, one surprise." in text
    with pytest.raises(publish.ShapingError, match="intro: at most 600"):
        publish.set_intro(seeded, edition_id=draft, intro="x" * 601)
    publish.approve_edition(
        seeded, edition_id=draft, by="Ada", now=datetime(2026, 11, 24, tzinfo=UTC)
    )
    with pytest.raises(publish.EditionStateError, match="approved"):
        publish.drop_item(
            seeded,
            edition_id=draft,
            comparison_id=store.edition_comparisons(seeded, edition_id=draft)[0].id or 0,
        )


def test_candidates_the_cap_left_out_can_be_swapped_in(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    from .test_email_size import _draft

    edition_id = _draft(session, settings, tmp_path, 6, 3)
    edition = store.get_edition(session, edition_id=edition_id)
    left_out = publish.candidates(session, edition=edition)
    assert len(left_out) == 3 and edition.more_count == 3
    carried = store.edition_comparisons(session, edition_id=edition_id)
    # Swap: drop the lead, add the first one the cap left out.
    publish.drop_item(session, edition_id=edition_id, comparison_id=carried[0].id or 0)
    publish.add_item(session, edition_id=edition_id, comparison_id=left_out[0][0])
    session.commit()
    now_carried = [c.id for c in store.edition_comparisons(session, edition_id=edition_id)]
    assert now_carried[-1] == left_out[0][0] and carried[0].id not in now_carried
    assert edition.more_count == 2  # what is carried is no longer "also this week"
    page, _, _ = publish.preview_edition(session, edition_id=edition_id, settings=settings)
    assert page.count('class="callbox"') == 3
    with pytest.raises(publish.ShapingError, match="not a candidate"):
        publish.add_item(session, edition_id=edition_id, comparison_id=carried[0].id or 0)


def test_an_editors_call_and_preheader_for_one_edition(
    seeded: Session, settings: Settings, draft: int
) -> None:
    lead = store.edition_comparisons(seeded, edition_id=draft)[0]
    publish.set_verdict(
        seeded, edition_id=draft, comparison_id=lead.id or 0, verdict="Ship it, but pin the model."
    )
    publish.set_preheader(seeded, edition_id=draft, preheader="Four calls, one surprise")
    seeded.commit()
    html, text, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "Ship it, but pin the model." in html and "Ship it, but pin the model." in text
    assert rendered.preheader == "Four calls, one surprise"
    # The store's comparison is untouched: the call is this edition's only.
    assert store.get_comparison(seeded, slug=lead.slug).verdict is None
    with pytest.raises(publish.ShapingError, match="verdict: at most 280"):
        publish.set_verdict(seeded, edition_id=draft, comparison_id=lead.id or 0, verdict="x" * 281)
    publish.set_verdict(seeded, edition_id=draft, comparison_id=lead.id or 0, verdict="")
    publish.set_preheader(seeded, edition_id=draft, preheader=None)
    html, _, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "Ship it, but pin the model." not in html
    assert rendered.preheader.startswith("Ship Patchwright Agent")


def test_pins_keep_an_editors_order_and_choices_across_a_refresh(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    from .test_email_size import AT, _draft

    edition_id = _draft(session, settings, tmp_path, 6, 3)
    edition = store.get_edition(session, edition_id=edition_id)
    a, b, c = (x.id or 0 for x in store.edition_comparisons(session, edition_id=edition_id))
    d = publish.candidates(session, edition=edition)[0][0]
    # Moving c up pins it there; adding d (past the cap) pins it at the end.
    publish.move_item(session, edition_id=edition_id, comparison_id=c, up=True)
    publish.add_item(session, edition_id=edition_id, comparison_id=d)
    session.commit()
    assert publish.pinned_ids(session, edition=edition) == {c, d}

    def carried() -> list[int]:
        return [x.id or 0 for x in store.edition_comparisons(session, edition_id=edition_id)]

    assert carried() == [a, c, b, d]
    outcome = publish.refresh_draft(session, edition_id=edition_id, settings=settings, now=AT)
    # The pins stay where the editor put them and take two of the three places; the newest
    # unpinned comparison takes the third, and the refresh says what left.
    assert carried() == [a, c, d]
    assert outcome.removed and "removed" in outcome.changes()
    # Unpinned, c follows the selection again on the next refresh.
    publish.pin_item(session, edition_id=edition_id, comparison_id=c, pinned=False)
    session.commit()
    publish.refresh_draft(session, edition_id=edition_id, settings=settings, now=AT)
    assert carried() == [a, b, d]
    with pytest.raises(publish.ShapingError, match="not in edition"):
        publish.pin_item(session, edition_id=edition_id, comparison_id=c, pinned=True)


def test_a_refresh_names_the_comparisons_edited_in_the_store(
    seeded: Session, settings: Settings, draft: int
) -> None:
    from datetime import UTC, datetime

    edition = store.get_edition(seeded, edition_id=draft)
    assert publish.edited_since_seen(seeded, edition=edition) == []
    lead = store.edition_comparisons(seeded, edition_id=draft)[0]
    tools = [lead.tools[0].model_copy(update={"tagline": "Now with a new tagline"}), lead.tools[1]]
    store.upsert_comparisons(seeded, records=[lead.model_copy(update={"tools": tools})])
    seeded.commit()
    # The draft page can say so before any refresh ...
    assert publish.edited_since_seen(seeded, edition=edition) == [(lead.id, lead.title)]
    # ... and the refresh reports it, then counts it as seen.
    outcome = publish.refresh_draft(
        seeded, edition_id=draft, settings=settings, now=datetime(2026, 11, 26, tzinfo=UTC)
    )
    assert outcome.edited == (lead.title,) and f"1 edited ({lead.title})" in outcome.changes()
    assert publish.edited_since_seen(seeded, edition=edition) == []


def test_reschedule_refuses_bad_input_in_one_line_and_changes_nothing(
    seeded: Session, settings: Settings, draft: int
) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    from .conftest import SECRET

    env = {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_MAIL_BACKEND": "memory://",
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_JOURNAL_DIR": settings.journal_dir,
        "COLUMNS": "200",
    }
    before = store.get_edition(seeded, edition_id=draft).scheduled_for
    for at, says in (
        ("next tuesday", "--at: 'next tuesday' is not an ISO 8601 date or time"),
        ("2027-01-05T09:00", "its newsletter has no schedule"),  # the default has none
    ):
        out = CliRunner().invoke(app, ["edition", "reschedule", str(draft), "--at", at], env=env)
        assert out.exit_code == 1 and says in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).scheduled_for == before
