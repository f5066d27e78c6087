"""Import: the seed round-trips, bad records are all reported and nothing is written, CSV lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select

from newsletter import publish
from newsletter.audience import importing
from newsletter.audience.importing import ImportRejected, parse_comparisons
from newsletter.config import Settings
from newsletter.storage import store
from newsletter.storage.models import (
    Comparison,
    Review,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    Tool,
)
from tests.conftest import IMPORTED_AT

from .conftest import EXAMPLES, comparison_dict

SEED = Path(__file__).resolve().parent / "fixtures" / "comparison-page.txt"  # copy of the real page
SEED_SLUG = "claude-4-api-tool-use-streaming-vs-hugging-face-inference-providers"


def _write(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "comparisons.json"
    path.write_text(json.dumps({"comparisons": records}), encoding="utf-8")
    return path


def _count(session: Session, model: type) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def test_seed_comparison_round_trips_with_every_field(seeded: Session) -> None:
    raw = json.loads(EXAMPLES.read_text(encoding="utf-8"))["comparisons"][0]
    stored = store.get_comparison(seeded, slug=SEED_SLUG)
    assert stored.model_dump(mode="json") == parse_comparisons(json.dumps({"comparisons": [raw]}))[
        0
    ].model_dump(mode="json")
    claude, hf = stored.tools
    assert claude.name == "Claude 4 API: Tool Use Streaming & Prompt Caching"
    assert hf.name == "Hugging Face Inference Providers Marketplace"
    assert (claude.entry_price, hf.entry_price) == ("Paid", "Free")
    assert claude.community is None and hf.community is None
    assert [r.lens for r in claude.reviews] == ["builder", "skeptic", "futurist", "buyer"]
    assert all(r.verdict == "ship" for t in stored.tools for r in t.reviews)
    assert stored.published_at == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_example_file_is_faithful_to_the_seed_page(seeded: Session) -> None:
    """Every quote, tagline and description of the real page is in the example, verbatim."""
    if not SEED.exists():
        pytest.fail(f"seed page not found at {SEED}")
    page = SEED.read_text(encoding="utf-8")
    stored = store.get_comparison(seeded, slug=SEED_SLUG)
    assert stored.title in page
    for tool in stored.tools:
        for text in (tool.name, tool.tagline, tool.description, tool.category):
            assert text in page
        for review in tool.reviews:
            assert f"“{review.quote}”" in page
    assert sum(len(t.reviews) for t in stored.tools) == page.count("“") == 8


def test_reimport_of_the_same_file_changes_nothing(seeded: Session) -> None:
    before = seeded.exec(select(Comparison.slug, Comparison.updated_at)).all()
    tools_before = seeded.exec(select(Tool.id)).all()
    report = importing.import_comparisons(seeded, path=EXAMPLES)
    seeded.commit()
    assert (report.created, report.updated) == (0, 0)
    assert report.unchanged == len(before)
    assert seeded.exec(select(Comparison.slug, Comparison.updated_at)).all() == before
    assert seeded.exec(select(Tool.id)).all() == tools_before


def test_changed_record_is_updated_by_slug(session: Session, tmp_path: Path) -> None:
    importing.import_comparisons(session, path=_write(tmp_path, [comparison_dict()]))
    changed = comparison_dict(title="Alpha vs Beta, revisited")
    changed["tools"][0]["reviews"].append({"lens": "buyer", "verdict": "ship", "quote": "Yes."})
    report = importing.import_comparisons(session, path=_write(tmp_path, [changed]))
    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    stored = store.get_comparison(session, slug="alpha-vs-beta")
    assert stored.title == "Alpha vs Beta, revisited"
    assert len(stored.tools[0].reviews) == 3
    assert _count(session, Comparison) == 1 and _count(session, Tool) == 2


BAD_RECORDS = [
    ({"slug": "Not A Slug"}, "slug: String should match pattern"),
    ({"title": ""}, "title: String should have at least 1 character"),
    ({"url": "javascript:alert(1)"}, "url: String should match pattern"),
    ({"published_at": "2026-11-24T10:00:00"}, "published_at: Input should have timezone info"),
    ({"published_at": "next tuesday"}, "published_at: Input should be a valid datetime"),
    ({"tools": []}, "tools: List should have at least 2 items"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"id": 7}, "id: not allowed in import files"),
]


@pytest.mark.parametrize(("override", "message"), BAD_RECORDS)
def test_each_kind_of_bad_record_is_named(override: dict[str, Any], message: str) -> None:
    record = comparison_dict("bad-one")
    record.update(override)
    with pytest.raises(ImportRejected) as info:
        parse_comparisons(json.dumps({"comparisons": [comparison_dict("good-one"), record]}))
    slug = record["slug"]
    assert any(
        p.startswith(f"record 2 ({slug}): ") and message in p for p in info.value.problems
    ), info.value.problems


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["tools"][0].update(name=""), "tools.0.name: String should have at least"),
        (
            lambda r: r["tools"][1]["reviews"][0].update(verdict="maybe"),
            "tools.1.reviews.0.verdict",
        ),
        (lambda r: r["tools"][0].update(community={"up": -1, "down": 0}), "tools.0.community.up"),
        (lambda r: r["tools"][0].update(entry_price=None), "tools.0.entry_price"),
        (lambda r: r["tools"][0].update(tagline="line\x00break"), "contains control characters"),
        (lambda r: r["tools"].append(r["tools"][0]), "tools: List should have at most 2 items"),
    ],
)
def test_nested_field_errors_name_the_path(mutate: Any, message: str) -> None:
    record = comparison_dict("nested")
    mutate(record)
    with pytest.raises(ImportRejected) as info:
        parse_comparisons(json.dumps({"comparisons": [record]}))
    assert any(p.startswith("record 1 (nested): ") and message in p for p in info.value.problems)


def test_every_problem_is_reported_and_nothing_is_written(session: Session, tmp_path: Path) -> None:
    records = [
        comparison_dict("fine-one"),
        comparison_dict("bad-url", url="ftp://x"),
        comparison_dict("fine-two"),
        comparison_dict("bad-tools", tools=[]),
        comparison_dict("fine-one"),
    ]
    with pytest.raises(ImportRejected) as info:
        importing.import_comparisons(session, path=_write(tmp_path, records))
    problems = info.value.problems
    assert any(p.startswith("record 2 (bad-url): url:") for p in problems)
    assert any(p.startswith("record 4 (bad-tools): tools:") for p in problems)
    assert "record 5 (fine-one): slug: duplicate of record 1" in problems
    session.rollback()
    assert _count(session, Comparison) == 0 and _count(session, Review) == 0


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ImportRejected, match="not valid JSON"):
        parse_comparisons("{not json")
    with pytest.raises(ImportRejected, match="expected an object"):
        parse_comparisons("[]")


# --- subscribers -------------------------------------------------------------------------------


def _csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "subscribers.csv"
    path.write_text(body, encoding="utf-8")
    return path


def test_bad_csv_lines_are_reported_by_number_and_the_rest_imported(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    publish.default_newsletter(session, settings)
    path = _csv(
        tmp_path,
        "email,name,timezone,newsletters\n"
        "ana@example.com,Ana,Europe/Berlin,\n"  # line 2 ok
        "not-an-address,Bob,,\n"  # line 3
        "ANA@example.com,Ana again,,\n"  # line 4 duplicate
        "carl@example.com,Carl,Mars/Olympus,\n"  # line 5 bad tz
        "dee@example.com,Dee,,no-such-list\n"  # line 6 unknown newsletter
        '"eve@example.com","Eve\nInjected: yes",,\n'  # lines 7-8 newline in name
        "fay@example.com,,,\n",  # line 9 ok
    )
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter
    )
    session.commit()
    rejected = report.rejected
    assert rejected[0].startswith("line 3 (not-an-address): email:")
    assert rejected[1] == "line 4 (ANA@example.com): email: duplicate of line 2"
    assert rejected[2].startswith("line 5 (carl@example.com): timezone: unknown IANA time zone")
    assert rejected[3].startswith("line 6 (dee@example.com): newsletters: unknown newsletter")
    assert rejected[4].startswith("line 8 (eve@example.com): name: contains control characters")
    assert len(rejected) == 5
    emails = sorted(session.exec(select(Subscriber.email)).all())
    assert emails == ["ana@example.com", "fay@example.com"]
    assert report.created == 2 and report.subscribed == 2
    assert _count(session, SubscriptionEvent) == 2


def test_strict_import_writes_nothing(session: Session, settings: Settings, tmp_path: Path) -> None:
    publish.default_newsletter(session, settings)
    path = _csv(tmp_path, "email\nok@example.com\nbroken@\n")
    with pytest.raises(ImportRejected) as info:
        importing.import_subscribers(
            session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter, strict=True
        )
    assert info.value.problems[0].startswith("line 3 (broken@): email:")
    assert _count(session, Subscriber) == 0


def test_unknown_column_is_refused(session: Session, settings: Settings, tmp_path: Path) -> None:
    publish.default_newsletter(session, settings)
    with pytest.raises(ImportRejected, match="unknown column"):
        importing.import_subscribers(
            session,
            now=IMPORTED_AT,
            path=_csv(tmp_path, "email,nmae\nx@example.com,X\n"),
            default_newsletter=settings.newsletter,
        )


def test_import_never_reactivates_unsubscribed_or_suppressed(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    newsletter = publish.default_newsletter(session, settings)
    path = _csv(tmp_path, "email,name\nleft@example.com,Left\nbounced@example.com,B\n")
    importing.import_subscribers(
        session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter
    )
    session.commit()
    left = session.exec(select(Subscriber).where(Subscriber.email == "left@example.com")).one()
    bounced = session.exec(
        select(Subscriber).where(Subscriber.email == "bounced@example.com")
    ).one()
    store.set_subscription_status(
        session,
        subscriber_id=left.id or 0,
        newsletter_id=newsletter.id or 0,
        status="unsubscribed",
        source="page",
    )
    bounced.suppressed = "bounced"
    session.commit()
    report = importing.import_subscribers(
        session,
        now=IMPORTED_AT,
        path=_csv(tmp_path, "email\nLEFT@example.com\nbounced@example.com\n"),
        default_newsletter=settings.newsletter,
    )
    session.commit()
    assert report.kept_unsubscribed == 1 and report.suppressed == 1 and report.subscribed == 0
    statuses = dict(session.exec(select(Subscription.subscriber_id, Subscription.status)).all())
    assert statuses[left.id or 0] == "unsubscribed"
    assert store.count_active_subscribers(session, newsletter_id=newsletter.id or 0) == 0


def test_example_subscriber_file_imports(session: Session, settings: Settings) -> None:
    publish.default_newsletter(session, settings)
    path = Path(__file__).resolve().parents[1] / "subscribers" / "example.csv"
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter
    )
    assert report.created >= 10
    # The demo's first output must not look like an error: the example is clean (duplicates
    # are tested with files of their own).
    assert report.rejected == []


def test_schema_file_is_generated_from_the_models() -> None:
    schema_file = Path(__file__).resolve().parents[1] / "schemas" / "comparisons.schema.json"
    assert schema_file.read_text(encoding="utf-8") == importing.comparisons_json_schema(), (
        "stale: run `newsletter import schema > schemas/comparisons.schema.json`"
    )
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    tool = schema["$defs"]["ToolData"]
    assert set(tool["required"]) >= {"name", "category", "tagline", "description", "entry_price"}


def test_unreadable_and_malformed_inputs_get_clear_errors(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    publish.default_newsletter(session, settings)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email,name\nj@example.com,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ImportRejected, match="not UTF-8 text"):
        importing.import_subscribers(
            session, now=IMPORTED_AT, path=latin, default_newsletter=settings.newsletter
        )
    big = tmp_path / "big.csv"
    big.write_text('email,name\n"a@example.com","' + "x" * 200_000 + '"\nb@example.com,B\n')
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=big, default_newsletter=settings.newsletter
    )
    assert report.rejected and report.rejected[0].startswith("line ")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"comparisons": [comparison_dict()]}).encode())
    assert importing.import_comparisons(session, path=bom).created == 1
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ImportRejected):
        parse_comparisons(deep)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(published_at=1795000000), "published_at: Value error, expected an ISO"),
        (lambda r: r["tools"][0].update(community={"up": True, "down": 0}), "community.up"),
        (lambda r: r["tools"][0].update(community={"up": 2**63, "down": 0}), "community.up"),
    ],
)
def test_lax_values_are_refused(mutate: Any, message: str) -> None:
    record = comparison_dict("lax")
    mutate(record)
    with pytest.raises(ImportRejected) as info:
        parse_comparisons(json.dumps({"comparisons": [record]}))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_unicode_line_separators_inside_a_name_do_not_split_the_row(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    publish.default_newsletter(session, settings)
    path = tmp_path / "nel.csv"
    path.write_text("email,name\nnel@example.com,Ana\x85Smith\nz@example.com,Z\n", encoding="utf-8")
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter
    )
    assert report.rejected == [] and report.created == 2


def test_the_fast_path_for_plain_addresses_agrees_with_email_validator() -> None:
    """normalize_email answers plain addresses itself (an import of a million lines skips
    email-validator for them); wherever it does, email-validator must give the same."""
    import itertools
    import random

    from email_validator import EmailNotValidError, validate_email

    from newsletter.audience.addresses import _plain

    rng = random.Random(16)
    locals_ = [
        "ann",
        "Ann.Lee",
        "a",
        "x" * 64,
        "x" * 65,
        "a..b",
        ".a",
        "a.",
        "o'brien",
        "a+tag",
        "first_last",
        "a-b",
        'quoted"x',
        "sp ace",
        "ümlaut",
        "a!#$%&'*+/=?^_`{|}~-z",
        "A1.B2.C3",
    ]
    domains = [
        "example.org",
        "Example.ORG",
        "mail.example.co.uk",
        "a.io",
        "x.c1",
        "1.2",
        "a.b",
        "host.test",
        "host.local",
        "h.localhost",
        "x.onion",
        "foo.arpa",
        "xn--bcher-kva.example",
        "ex--ample.org",
        "-bad.org",
        "bad-.org",
        "a" * 63 + ".com",
        "a" * 64 + ".com",
        "sub." * 60 + "com",
        "example",
        "exa_mple.org",
        "EXAMPLE.COM",
        "b.xn--p1ai",
    ]
    corpus = [f"{loc}@{dom}" for loc, dom in itertools.product(locals_, domains)]
    alphabet = "abcXYZ09.-_+'@"
    corpus += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 30))) for _ in range(3000)
    ]
    fast = 0
    for raw in corpus:
        answer = _plain(raw)
        if answer is None:
            continue
        fast += 1
        try:
            checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as exc:
            raise AssertionError(
                f"fast path accepted {raw!r}, email-validator says {exc}"
            ) from None
        email = checked.ascii_email or checked.normalized
        assert answer == (email, email.lower()), raw
    # The realistic part of the corpus takes the fast path (else it bought nothing).
    assert fast >= 60, fast
    assert _plain("Reader.One@Mail.Example.ORG") == (
        "Reader.One@mail.example.org",
        "reader.one@mail.example.org",
    )


def test_a_duplicate_in_a_later_chunk_names_the_first_line(
    session: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importing, "IMPORT_CHUNK", 1)
    publish.default_newsletter(session, settings)
    path = _csv(tmp_path, "email\na@example.com\nb@example.com\nA@EXAMPLE.com\nc@example.com\n")
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=path, default_newsletter=settings.newsletter
    )
    session.commit()
    assert report.rejected == ["line 4 (A@example.com): email: duplicate of line 2"]
    assert (report.created, report.subscribed) == (3, 3)
    with pytest.raises(ImportRejected):  # strict: validated whole before any chunk is written
        importing.import_subscribers(
            session,
            now=IMPORTED_AT,
            path=_csv(tmp_path, "email\nd@example.com\ne@example.com\nbroken@\n"),
            default_newsletter=settings.newsletter,
            strict=True,
        )
    assert _count(session, Subscriber) == 3


def test_a_long_file_is_checked_as_utf8_a_block_at_a_time(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    """The file is read as a stream: the UTF-8 check runs a megabyte at a time, names the
    exact first bad byte past the first block, does not mistake a character cut by a block
    edge for an error, and refuses before anything is written."""
    publish.default_newsletter(session, settings)
    lines = "".join(f"p{i:07d}@example.com,Zoë\n" for i in range(60_000))
    for pad in range(30):  # a first line long enough that the first block ends inside "ë"
        body = f"email,name\npad@example.com,{'x' * pad}\n{lines}"
        if body.encode()[(1 << 20) - 1] == "ë".encode()[0]:
            break
    else:
        raise AssertionError("no padding puts a block edge inside a character")
    good = tmp_path / "good.csv"
    good.write_bytes(body.encode())
    assert importing.utf8_lines(good) == 60_002
    bad = tmp_path / "bad.csv"
    raw = body.encode()
    at = (1 << 20) + 12_345
    bad.write_bytes(raw[:at] + b"\xff" + raw[at:])
    with pytest.raises(ImportRejected, match=rf"not UTF-8 text \(byte {at}\)"):
        importing.import_subscribers(
            session, now=IMPORTED_AT, path=bad, default_newsletter=settings.newsletter
        )
    assert session.exec(select(Subscriber)).first() is None  # nothing written
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=good, default_newsletter=settings.newsletter
    )
    assert report.created == 60_001 and not report.rejected
