"""Worker processes: several on one PostgreSQL database send an edition exactly once each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.config import Settings
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from tests.conftest import IMPORTED_AT

from .conftest import EXAMPLES, SECRET


def _prepare(url: str, settings: Settings, tmp_path: Path, subscribers: int) -> int:
    engine = make_engine(url)
    upgrade(engine)
    csv = tmp_path / "s.csv"
    csv.write_text("email\n" + "".join(f"w{i}@example.com\n" for i in range(subscribers)))
    try:
        with Session(engine, expire_on_commit=False) as session:
            publish.default_newsletter(session, settings)
            importing.import_comparisons(session, path=EXAMPLES)
            importing.import_subscribers(
                session, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
            )
            session.commit()
            draft = publish.draft_edition(
                session,
                settings=settings,
                newsletter_slug=None,
                at=datetime(2026, 11, 25, tzinfo=UTC),
            )
            edition_id = draft.edition.id or 0
            assert (
                publish.start_edition(session, edition_id=edition_id, settings=settings)
                == subscribers
            )
    finally:
        engine.dispose()
    return edition_id


def _workers(
    url: str, outbox: Path, n: int, tmp_path: Path
) -> list[subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_MAIL_BACKEND=f"file://{outbox}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        NEWSLETTER_BATCH_SIZE="10",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "newsletter.cli", "worker", "--once", "--poll", "0.2"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _check_outbox(outbox: Path, subscribers: int) -> None:
    files = sorted(outbox.glob("*.eml"))
    assert not [f for f in files if f.name.count(".") > 1], "a delivery was written twice"
    recipients = Counter(
        message_from_bytes(f.read_bytes())["To"].split("<")[-1].strip(">") for f in files
    )
    assert len(recipients) == subscribers and set(recipients.values()) == {1}


def test_four_worker_processes_on_postgresql_send_everyone_exactly_once(
    postgres_url: str, settings: Settings, tmp_path: Path
) -> None:
    pg = settings.model_copy(update={"database_url": postgres_url})
    edition_id = _prepare(postgres_url, pg, tmp_path, subscribers=400)
    outbox = tmp_path / "outbox"
    results = _workers(postgres_url, outbox, 4, tmp_path)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    _check_outbox(outbox, 400)
    sent_by = [sum(int(w) for w in _sent_counts(r.stdout)) for r in results]
    assert sum(sent_by) == 400
    engine = make_engine(postgres_url)
    try:
        with Session(engine) as session:
            assert ledger.counts(session, edition_id=edition_id)["sent"] == 400
            assert store.edition_status(session, edition_id=edition_id) == "sent"
    finally:
        engine.dispose()


def _sent_counts(stdout: str) -> list[str]:
    return [line.split("sent ")[1].split(",")[0] for line in stdout.splitlines() if " via " in line]


def test_one_worker_on_sqlite_says_one_is_enough(settings: Settings, tmp_path: Path) -> None:
    url = settings.database_url
    _prepare(url, settings, tmp_path, subscribers=30)
    outbox = tmp_path / "outbox"
    (result,) = _workers(url, outbox, 1, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "one worker process is enough" in result.stderr
    _check_outbox(outbox, 30)
