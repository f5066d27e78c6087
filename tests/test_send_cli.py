"""`newsletter edition send` as an operator sees it: progress, the question first, dry runs.

The command runs as a real process: under a pseudo-terminal (``pty``) where a person would
watch it, and with pipes where cron or systemd would. A rate limit makes the send take a few
seconds, so there is progress to see.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from newsletter import publish
from newsletter.audience import importing
from newsletter.config import Settings
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Delivery, Subscriber, Subscription
from tests.conftest import IMPORTED_AT

from .conftest import EXAMPLES, SECRET


def _prepare(tmp_path: Path, subscribers: int) -> tuple[dict[str, str], int]:
    """A database with a draft for ``subscribers`` people, and the environment to reach it."""
    db = tmp_path / "n.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{db}",
        NEWSLETTER_MAIL_BACKEND=f"file://{tmp_path / 'outbox'}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        NEWSLETTER_JOURNAL_DIR=str(tmp_path / "journal"),
        NEWSLETTER_RATE_LIMIT="10/s",
        COLUMNS="160",
    )
    settings = Settings(
        database_url=env["NEWSLETTER_DATABASE_URL"],
        secret_key=SECRET,
        _env_file=None,
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    csv = tmp_path / "s.csv"
    csv.write_text("email\n" + "".join(f"p{i}@example.com\n" for i in range(subscribers)))
    with Session(engine, expire_on_commit=False) as session:
        publish.default_newsletter(session, settings)
        importing.import_comparisons(session, path=EXAMPLES)
        importing.import_subscribers(
            session, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
        )
        session.commit()
        draft = publish.draft_edition(
            session, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
        )
        edition_id = draft.edition.id or 0
    engine.dispose()
    return env, edition_id


def _command(edition_id: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "newsletter.cli", "edition", "send", str(edition_id), *extra]


def _in_terminal(
    args: Sequence[str], env: dict[str, str], cwd: Path, answer: bytes | None = None
) -> tuple[int, str]:
    """Run ``args`` on a pseudo-terminal (stdin, stdout and stderr); everything it printed."""
    main, child = pty.openpty()
    process = subprocess.Popen(args, env=env, cwd=cwd, stdin=child, stdout=child, stderr=child)
    os.close(child)
    output = b""
    answered = answer is None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Send it?" in output:
                os.write(main, answer or b"")
                answered = True
        elif process.poll() is not None:
            break
    os.close(main)
    return process.wait(timeout=30), output.decode("utf-8", "replace")


def _delivery_count(env: dict[str, str]) -> int:
    engine = make_engine(env["NEWSLETTER_DATABASE_URL"])
    try:
        with Session(engine) as session:
            return int(session.exec(sql_select(func.count()).select_from(Delivery)).one())
    finally:
        engine.dispose()


def _status(env: dict[str, str], edition_id: int) -> str:
    engine = make_engine(env["NEWSLETTER_DATABASE_URL"])
    try:
        with Session(engine) as session:
            return store.edition_status(session, edition_id=edition_id)
    finally:
        engine.dispose()


def test_without_a_terminal_progress_is_a_line_every_few_seconds(tmp_path: Path) -> None:
    """Under cron or systemd nothing used to print until the end."""
    env, edition_id = _prepare(tmp_path, subscribers=40)
    out = subprocess.run(
        _command(edition_id, "--progress-every", "1"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    pattern = re.compile(
        rf"^edition {edition_id}: (\d+)/40 \(\d+%\), [\d.]+ msg/s, \S+ left, 0 not sent "
        r"\(failed, deferred or unknown\)$"
    )
    counts = [int(m.group(1)) for line in out.stderr.splitlines() if (m := pattern.match(line))]
    assert len(counts) >= 2, out.stderr  # 40 messages at 10/s: about four seconds
    assert counts == sorted(counts) and counts[0] < 40
    assert "sent 40" in out.stdout


def test_on_a_terminal_the_bar_moves_with_every_message(tmp_path: Path) -> None:
    """The bar used to move once per 500-message batch: at 4/s it sat at 0/16 to the end.
    (The rate limit hands out 4 messages at a time, so the bar moves 4 by 4.)"""
    env, edition_id = _prepare(tmp_path, subscribers=16)
    env["NEWSLETTER_RATE_LIMIT"] = "4/s"
    code, output = _in_terminal(_command(edition_id, "--yes"), env, tmp_path)
    assert code == 0, output
    seen = {int(n) for n in re.findall(r"(\d+)/16\b", output)}
    assert len(seen - {0, 16}) >= 3, output  # counts in between, not just start and end
    assert "msg/s" in output and "left" in output
    assert "About to send" not in output  # --yes asks nothing


def test_on_a_terminal_it_says_what_it_will_do_and_sends_nothing_unless_told_to(
    tmp_path: Path,
) -> None:
    env, edition_id = _prepare(tmp_path, subscribers=5)
    code, output = _in_terminal(_command(edition_id), env, tmp_path, answer=b"n\n")
    assert code == 1, output
    assert (
        f"About to send edition {edition_id} (draft, 'Patchwright Agent vs LintPilot Reviews (+3 more)')"
        in output
        and "to 5 subscribers via file outbox " in output
    ), output
    assert "nothing was sent" in output
    assert _status(env, edition_id) == "draft" and _delivery_count(env) == 0
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())
    code, output = _in_terminal(_command(edition_id), env, tmp_path, answer=b"y\n")
    assert code == 0, output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 5


def test_a_dry_run_renders_and_checks_everything_and_records_nothing(tmp_path: Path) -> None:
    env, edition_id = _prepare(tmp_path, subscribers=6)
    engine = make_engine(env["NEWSLETTER_DATABASE_URL"])
    with Session(engine) as session:  # an address no import would take, stored by hand
        broken = Subscriber(email="broken address@", email_key="broken address@")
        session.add(broken)
        session.flush()
        newsletter_id = publish.default_newsletter(
            session,
            Settings(secret_key=SECRET, _env_file=None),
        ).id
        session.add(Subscription(subscriber_id=broken.id or 0, newsletter_id=newsletter_id or 0))
        session.commit()
        broken_id = broken.id
    engine.dispose()
    out = subprocess.run(
        _command(edition_id, "--dry-run"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr  # one would fail: say so in the exit code
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"dry run of edition {edition_id} (draft, 'Patchwright Agent vs")
    assert "would send 6 messages via file outbox " in lines[0]
    assert "nothing was sent or recorded" in lines[0]
    assert re.match(r"  messages: [\d.]+ KB on average, largest [\d.]+ KB$", lines[1]), lines
    assert lines[2] == "  1 would fail before sending:"
    assert lines[3].startswith(f"    subscriber {broken_id} <broken address@>:")
    assert _status(env, edition_id) == "draft" and _delivery_count(env) == 0
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())


def test_a_dry_run_of_a_started_edition_counts_what_is_left(tmp_path: Path) -> None:
    env, edition_id = _prepare(tmp_path, subscribers=4)
    engine = make_engine(env["NEWSLETTER_DATABASE_URL"])
    settings = Settings(
        database_url=env["NEWSLETTER_DATABASE_URL"],
        secret_key=SECRET,
        _env_file=None,
    )
    with Session(engine) as session:
        publish.start_edition(session, edition_id=edition_id, settings=settings)
        first = session.exec(sql_select(Delivery).order_by(col(Delivery.id))).first()
        assert first is not None
        first.status = "sent"
        session.commit()
        plan = publish.send_plan(session, edition_id=edition_id)
    engine.dispose()
    assert plan.audience == 3 and plan.status == "sending"
    out = subprocess.run(
        _command(edition_id, "--dry-run"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "(sending, " in out.stdout and "would send 3 messages" in out.stdout


@pytest.mark.parametrize("flag", ["--dry-run", "--yes"])
def test_the_new_flags_are_in_the_help(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "newsletter.cli", "edition", "send", "-h"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert flag in out.stdout


def test_a_worker_tells_its_progress_every_few_seconds(tmp_path: Path) -> None:
    env, edition_id = _prepare(tmp_path, subscribers=30)
    engine = make_engine(env["NEWSLETTER_DATABASE_URL"])
    with Session(engine) as session:
        publish.start_edition(
            session,
            edition_id=edition_id,
            settings=Settings(
                database_url=env["NEWSLETTER_DATABASE_URL"],
                secret_key=SECRET,
                _env_file=None,
            ),
        )
    engine.dispose()
    out = subprocess.run(
        [sys.executable, "-m", "newsletter.cli", "worker", "--once", "--progress-every", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith(f"edition {edition_id}: ")]
    assert len(lines) >= 2 and all("/30 (" in line and "msg/s" in line for line in lines), (
        out.stderr
    )
    assert "sent 30" in out.stdout


def test_html_preview_on_a_terminal_asks_for_a_file_instead(tmp_path: Path) -> None:
    """`edition preview ID` used to dump 50 KB of HTML into the terminal."""
    env, edition_id = _prepare(tmp_path, subscribers=1)
    preview = [sys.executable, "-m", "newsletter.cli", "edition", "preview", str(edition_id)]
    code, output = _in_terminal(preview, env, tmp_path)
    assert code == 1 and "would flood the terminal: add --out FILE.html" in output
    assert "<html" not in output
    code, output = _in_terminal([*preview, "--format", "text"], env, tmp_path)
    assert code == 0 and "THE CALL" in output
    piped = subprocess.run(preview, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stdout.startswith("<!DOCTYPE html>")


def test_edition_subject_is_kept(tmp_path: Path) -> None:
    env, edition_id = _prepare(tmp_path, subscribers=1)
    cli = [sys.executable, "-m", "newsletter.cli", "edition"]
    done = subprocess.run(
        [*cli, "subject", str(edition_id), "Hand-written subject"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    listing = subprocess.run([*cli, "list"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert "Hand-written subject" in listing.stdout
