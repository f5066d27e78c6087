"""Writers' suggestions in the console, with the real anthropic SDK against the local stub:
an editor writes suggestions for the coming draft (the answer streams onto the page), sees
the seed comparison's grounded suggestion beside the rules' call and the others refused,
accepts it (audited; the email carries it), and writing again costs nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter import publish
from newsletter.config import Settings
from newsletter.operations import audit
from newsletter.storage import store
from newsletter.storage.models import IntroSuggestion, Suggestion
from newsletter.web.app import create_app

from .model_stubs import CachingMessages, StubServer
from .test_console import Clock, _user, sign_in
from .test_writers import GROUNDED, MESSAGES

SEED = "claude-4-api-tool-use-streaming-vs-hugging-face-inference-providers"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        server.responders[MESSAGES] = CachingMessages(server, GROUNDED).reply_for
        yield server


def _console(settings: Settings, engine: Engine, stub: StubServer, **extra: Any) -> TestClient:
    configured = settings.model_copy(
        update={
            "writer": "claude",
            "anthropic_api_key": "sk-ant-console-test-key",
            "anthropic_base_url": stub.url,
            "writer_timeout": 5.0,
            **extra,
        }
    )
    return TestClient(
        create_app(configured, engine=engine, clock=Clock()),
        base_url="https://news.example.com",
        follow_redirects=False,
    )


def test_an_editor_writes_accepts_and_the_second_pass_is_free(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    _user(seeded, "ed@example.com", "editor")
    seed = store.get_comparison(seeded, slug=SEED)
    carried = [c.id for c in store.edition_comparisons(seeded, edition_id=draft)]
    assert seed.id in carried
    with _console(settings, engine, stub) as client:
        csrf = sign_in(client, "ed@example.com")
        assert "Write suggestions (claude)" in client.get(f"/console/editions/{draft}").text
        page = client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf})
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        text = page.text
        # The answers streamed onto the page, one section per comparison, escaped.
        assert text.count('<pre class="text">') == len(carried) + 1  # and the intro
        assert "&#34;pick&#34;" in text or "&quot;pick&quot;" in text
        assert (
            f"{len(carried)} written, 0 already written for this content, the intro written" in text
        )
        # Only the seed's answer is grounded in its reviews; the others are refused.
        assert text.count("refused (") == len(carried) - 1
        assert len(stub.posts(MESSAGES)) == len(carried) + 1  # and the intro
        draft_page = client.get(f"/console/editions/{draft}").text
        rows = seeded.exec(select(Suggestion).where(Suggestion.comparison_id == seed.id)).all()
        (row,) = rows
        assert f'id="suggestion-{row.id}"' in draft_page and GROUNDED["headline"][:40] in draft_page
        assert "from the cache" in draft_page  # the usage, cache reads included
        accepted = client.post(
            f"/console/editions/{draft}/suggestions/{row.id}/accept", data={"csrf": csrf}
        )
        assert accepted.status_code == 303
        # Writing again: the same content, the same writer and model: nothing is asked.
        again = client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf}).text
        # The intro is written again: the seed's call changed when it was accepted.
        assert (
            f"0 written, {len(carried)} already written for this content, the intro written"
            in again
        )
        assert len(stub.posts(MESSAGES)) == len(carried) + 2
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert publish.verdict_overrides(edition)[seed.id or 0] == GROUNDED["headline"]
    html, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "Both ship: Claude 4 API for agent loops" in text_part
    # The written reasons, each with the reviewer's words and the lens they come from.
    flat = " ".join(text_part.split())
    assert (
        'Why ship: cache savings show up in the usage object: "cache invalidation is explicit'
        in flat
    )
    assert "Best for teams running long-context agents in production" in flat
    assert 'Watch out: no visibility when a provider changes underneath: "It breaks' in flat
    assert "the Hub&#39;s reach makes it additive" in html or "the Hub's reach" in html
    actions = [e.action for e in audit.recent(seeded, target=f"edition {draft}")]
    assert actions[:3] == ["edition.suggest", "edition.suggestion.accept", "edition.suggest"]


def _written_suggestion(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> tuple[TestClient, str, int, int]:
    _user(seeded, "ed@example.com", "editor")
    client = _console(settings, engine, stub).__enter__()
    csrf = sign_in(client, "ed@example.com")
    client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf})
    seed = store.get_comparison(seeded, slug=SEED)
    row = seeded.exec(select(Suggestion).where(Suggestion.comparison_id == seed.id)).one()
    return client, csrf, row.id or 0, seed.id or 0


def test_an_editor_edits_the_words_before_accepting(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    client, csrf, sid, cid = _written_suggestion(settings, engine, seeded, draft, stub)
    url = f"/console/editions/{draft}/suggestions/{sid}/accept"
    page = client.get(f"/console/editions/{draft}").text
    assert 'name="for_0"' in page and "cache savings show up in the usage object" in page
    # An edit that breaks the rules is refused with the field, and nothing is stored.
    for bad, why in (
        ({"headline": "Ship whatever you like"}, "headline: does not name the pick"),
        ({"for_0": "see https://example.com"}, "tools.0.reason_for.text: carries a link"),
        ({"against_1": "x" * 161}, "tools.1.reason_against.text"),
    ):
        refused = client.post(url, data={"csrf": csrf, **bad})
        assert refused.status_code == 400 and why in refused.text, refused.text
        seeded.expire_all()
        assert not publish.verdict_overrides(store.get_edition(seeded, edition_id=draft))
    done = client.post(
        url,
        data={
            "csrf": csrf,
            "headline": "Both ship: Claude 4 API for agents, Hugging Face Inference Providers "
            "Marketplace for routing",
            "for_0": "the cache discount is visible per call",
            "for_whom_1": "teams comparing providers",
        },
    )
    assert done.status_code == 303, done.text
    seeded.expire_all()
    _, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    flat = " ".join(text_part.split())
    assert "Claude 4 API for agents, Hugging Face Inference Providers Marketplace for" in flat
    assert 'Why ship: the cache discount is visible per call: "cache invalidation' in flat
    assert "Best for teams comparing providers" in flat
    assert "cache savings show up" not in flat  # the suggestion's own words were replaced
    (record,) = [
        e for e in audit.recent(seeded, target=f"edition {draft}") if e.action.endswith("accept")
    ]
    assert json.loads(record.detail or "{}")["edited"] == [
        "headline",
        "tools.0.reason_for.text",
        "tools.1.for_whom",
    ]
    assert "with your words" in client.get(f"/console/editions/{draft}").text
    # Rejecting it now takes the written verdict and its call out of the email again.
    assert (
        client.post(
            f"/console/editions/{draft}/suggestions/{sid}/reject", data={"csrf": csrf}
        ).status_code
        == 303
    )
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert cid not in publish.verdict_overrides(edition)
    _, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "the cache discount is visible" not in text_part
    client.__exit__(None, None, None)


def test_an_editor_accepts_or_rejects_the_written_intro(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    from .model_stubs import INTRO

    client, csrf, _, _ = _written_suggestion(settings, engine, seeded, draft, stub)
    intro = seeded.exec(select(IntroSuggestion).where(IntroSuggestion.edition_id == draft)).one()
    page = client.get(f"/console/editions/{draft}").text
    assert 'id="intro-suggestion"' in page and INTRO["text"][:40] in page
    base = f"/console/editions/{draft}/intro-suggestions/{intro.id}"
    assert client.post(f"{base}/accept", data={"csrf": csrf}).status_code == 303
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).intro == INTRO["text"]
    _, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert INTRO["text"][:50] in " ".join(text_part.split())
    # Rejecting keeps whatever the intro is now (the editor's to change in the intro form).
    assert client.post(f"{base}/reject", data={"csrf": csrf}).status_code == 303
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert edition.intro == INTRO["text"] and publish.intro_decision(edition)["state"] == "rejected"
    actions = [e.action for e in audit.recent(seeded, target=f"edition {draft}")]
    assert actions[:2] == ["edition.intro-suggestion.reject", "edition.intro-suggestion.accept"]
    # Another edition's intro suggestion can't be used here.
    other = client.post(
        f"/console/editions/{draft}/intro-suggestions/{(intro.id or 0) + 99}/accept",
        data={"csrf": csrf},
    )
    assert other.status_code == 400 and "does not exist" in other.text
    client.__exit__(None, None, None)


def test_clearing_the_call_takes_the_written_verdict_out(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    client, csrf, sid, cid = _written_suggestion(settings, engine, seeded, draft, stub)
    client.post(f"/console/editions/{draft}/suggestions/{sid}/accept", data={"csrf": csrf})
    seeded.expire_all()
    _, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "cache savings show up in the usage object" in " ".join(text_part.split())
    client.post(f"/console/editions/{draft}/items/{cid}/verdict", data={"csrf": csrf})
    seeded.expire_all()
    _, text_part, _ = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert "cache savings show up" not in " ".join(text_part.split())
    client.__exit__(None, None, None)


def test_the_budget_stops_the_calls_and_says_so(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    _user(seeded, "ed@example.com", "editor")
    with _console(settings, engine, stub, writer_budget=100) as client:
        csrf = sign_in(client, "ed@example.com")
        text = client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf}).text
    assert "1 written" in text and len(stub.posts(MESSAGES)) == 1
    assert text.count("budget (100 tokens) is spent") == 4  # three comparisons, the intro


def test_a_writer_without_a_key_explains_and_changes_nothing(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    _user(seeded, "ed@example.com", "editor")
    with _console(settings, engine, stub, anthropic_api_key="") as client:
        csrf = sign_in(client, "ed@example.com")
        answer = client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf})
    assert answer.status_code == 400 and "ANTHROPIC_API_KEY" in answer.text
    assert not seeded.exec(select(Suggestion)).all() and not stub.posts(MESSAGES)


def test_a_service_failure_leaves_the_rules_and_a_note(
    settings: Settings, engine: Engine, seeded: Session, draft: int, stub: StubServer
) -> None:
    from .model_stubs import anthropic_error

    stub.responders.clear()
    for _ in range(5 * 3):  # each call is tried three times (the SDK's two retries)
        stub.queue(
            MESSAGES,
            anthropic_error(529, "overloaded_error", "Overloaded", **{"retry-after-ms": "1"}),
        )
    _user(seeded, "ed@example.com", "editor")
    with _console(settings, engine, stub) as client:
        csrf = sign_in(client, "ed@example.com")
        text = client.post(f"/console/editions/{draft}/suggest", data={"csrf": csrf}).text
        # The draft itself says what fell back, and why.
        notes = client.get(f"/console/editions/{draft}").text
    assert text.count("claude: HTTP 529: Overloaded; the rules") == 4
    assert "the intro: claude: HTTP 529: Overloaded; yours stands" in text
    assert "sk-ant-console-test-key" not in text and len(stub.posts(MESSAGES)) == 15
    block = notes.split('id="writer-notes"', 1)[1].split("</div>", 1)[0]
    assert block.count("<li>") == block.count("HTTP 529: Overloaded") == 5


# --- the command line ---------------------------------------------------------------------------


def _run(settings: Settings, *args: str, **env: str) -> Any:
    from typer.testing import CliRunner

    from newsletter.cli import app

    from .conftest import SECRET

    base = {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_MAIL_BACKEND": "memory://",
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_JOURNAL_DIR": settings.journal_dir,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=base | env)


def test_writers_try_shows_the_answer_its_cost_and_keeps_it(
    settings: Settings, seeded: Session, stub: StubServer
) -> None:
    rules = _run(settings, "writers", "try", SEED, "--writer", "rules")
    assert rules.exit_code == 0, rules.output
    assert '"pick": "both"' in rules.stdout
    claude = {
        "NEWSLETTER_WRITER": "claude",
        "NEWSLETTER_ANTHROPIC_API_KEY": "sk-ant-cli-test-key",
        "NEWSLETTER_ANTHROPIC_BASE_URL": stub.url,
    }
    out = _run(settings, "writers", "try", SEED, **claude)
    assert out.exit_code == 0, out.output
    assert "claude (claude-sonnet-4-5, " in out.stdout and "about $" in out.stdout
    assert json.loads(out.stdout.split("\n", 1)[1])["headline"] == GROUNDED["headline"]
    assert "sk-ant-cli-test-key" not in out.output
    again = _run(settings, "writers", "try", SEED, **claude)
    assert "already written by claude" in again.stdout and len(stub.posts(MESSAGES)) == 1
    other = _run(settings, "writers", "try", "patchwright-agent-vs-lintpilot-reviews", **claude)
    assert other.exit_code == 1 and "refused: tools.0.reason_for.quote" in other.stdout
    missing = _run(settings, "writers", "try", SEED, "--writer", "claude")
    assert missing.exit_code == 1 and "ANTHROPIC_API_KEY" in missing.output
    assert "Traceback" not in missing.output


def test_writers_suggest_for_a_draft(
    settings: Settings, seeded: Session, draft: int, stub: StubServer
) -> None:
    out = _run(
        settings,
        "writers",
        "suggest",
        str(draft),
        NEWSLETTER_WRITER="claude",
        NEWSLETTER_ANTHROPIC_API_KEY="sk-ant-cli-test-key",
        NEWSLETTER_ANTHROPIC_BASE_URL=stub.url,
    )
    assert out.exit_code == 0, out.output
    assert f"edition {draft}: 4 written, 0 reused" in out.stdout
    assert out.stdout.count("refused (") == 3


def test_the_scheduler_writes_suggestions_when_it_drafts(
    settings: Settings, seeded: Session, tmp_path: Any, stub: StubServer
) -> None:
    """Editors find suggestions waiting on the scheduled draft, by the writer its schedule
    file names (NEWSLETTER_WRITER stays rules); a writer that can't run leaves a line and
    the rules."""
    from datetime import UTC, datetime

    from newsletter.service import scheduler

    from .test_scheduler import publish_daily, run_clock, sync, write_schedule

    write_schedule(tmp_path / "s", writer="claude")
    sync(seeded, tmp_path / "s", settings)
    publish_daily(seeded, datetime(2026, 11, 23, tzinfo=UTC), 3)
    assert settings.writer == "rules"
    claude = settings.model_copy(
        update={
            "anthropic_api_key": "sk-ant-scheduler-key",
            "anthropic_base_url": stub.url,
        }
    )
    log = run_clock(
        seeded, claude, datetime(2026, 11, 30, 4, tzinfo=UTC), datetime(2026, 11, 30, 6, tzinfo=UTC)
    )
    lines = [line for _, line in log]
    (drafted,) = [line for line in lines if "drafted edition" in line]
    edition_id = int(drafted.rsplit(" ", 1)[1])
    carried = len(store.edition_comparisons(seeded, edition_id=edition_id))
    assert any(f"{carried} suggestions written by claude" in line for line in lines), lines
    assert len(seeded.exec(select(Suggestion)).all()) == carried == len(stub.posts(MESSAGES)) - 1
    (intro,) = seeded.exec(select(IntroSuggestion)).all()  # written from the draft's calls
    assert intro.edition_id == edition_id and intro.text and "Claude 4 API" in intro.text
    # No key: the draft is still made, with one line saying why there are no suggestions.
    keyless = claude.model_copy(update={"anthropic_api_key": ""})
    from newsletter.edition.content import ComparisonData

    from .conftest import comparison_dict

    store.upsert_comparisons(
        seeded,
        records=[
            ComparisonData.model_validate(
                comparison_dict("next-week", published_at="2026-12-02T12:00:00+00:00")
            )
        ],
    )
    seeded.commit()
    later = scheduler.tick(seeded, keyless, now=datetime(2026, 12, 7, 5, 30, tzinfo=UTC))
    assert any("suggestions not written (the claude writer needs an API key" in x for x in later)
    assert any("drafted edition" in x for x in later)
