"""Schedule commands and the scheduler process, run as an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, select

from newsletter.storage.database import make_engine
from newsletter.storage.models import Delivery, Edition

from .conftest import REPO, SECRET, comparison_dict
from .test_cli import env, run  # noqa: F401  (env is a fixture)


def test_the_shipped_schedule_file_is_valid(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    checked = run(["schedule", "check", str(REPO / "schedules")], env, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "weekly-ai-tool-verdicts.toml: ok" in checked.stdout


def test_check_names_every_problem_and_exits_1(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "schedules"
    folder.mkdir()
    (folder / "bad.toml").write_text(
        'slug = "bad"\nname = "Bad"\nsend = "Someday 25:00"\ntimezone = "Mars/Olympus"\n'
        'colour = "blue"\ndraft_before = "soon"\n'
    )
    (folder / "other.toml").write_text('slug = "other"\nname = "Other"\n')
    result = run(["schedule", "check", str(folder)], env, tmp_path)
    assert result.returncode == 1
    err = result.stderr
    assert "bad.toml: colour: unknown field" in err
    assert "bad.toml: timezone: unknown IANA time zone 'Mars/Olympus'" in err
    assert "bad.toml: draft_before:" in err
    assert "other.toml: send: missing" in err and "other.toml: timezone: missing" in err


def test_sync_list_pause_skip_resume(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    assert run(["db", "upgrade"], env, tmp_path).returncode == 0
    synced = run(["schedule", "sync", str(REPO / "schedules")], env, tmp_path)
    assert synced.returncode == 0 and "created: weekly-ai-tool-verdicts" in synced.stdout
    listed = run(["schedule", "list"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Monday 09:00 Europe/Berlin [active]" in listed.stdout
    assert "next send  Mon" in listed.stdout and "CE" in listed.stdout and "UTC)" in listed.stdout
    assert run(["schedule", "pause", "weekly-ai-tool-verdicts"], env, tmp_path).returncode == 0
    assert "[PAUSED]" in run(["schedule", "list"], env, tmp_path).stdout
    skipped = run(
        ["schedule", "skip", "weekly-ai-tool-verdicts", "--period", "2026-W49"], env, tmp_path
    )
    assert skipped.returncode == 0 and "2026-W49" in skipped.stdout
    bad = run(["schedule", "skip", "weekly-ai-tool-verdicts", "--period", "next"], env, tmp_path)
    assert bad.returncode == 1 and "expected an ISO week" in bad.stderr
    assert run(["schedule", "resume", "weekly-ai-tool-verdicts"], env, tmp_path).returncode == 0
    assert "[active]" in run(["schedule", "list"], env, tmp_path).stdout
    missing = run(["schedule", "pause", "nope"], env, tmp_path)
    assert missing.returncode == 1


def _due_now_schedule(folder: Path) -> None:
    """A schedule whose send time was two minutes ago (UTC), so a starting scheduler catches
    it up at once, within the grace time."""
    due = datetime.now(UTC) - timedelta(minutes=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weekly-ai-tool-verdicts.toml").write_text(
        'slug = "weekly-ai-tool-verdicts"\nname = "Weekly AI Tool Verdicts"\n'
        f'send = "{due:%A %H:%M}"\ntimezone = "UTC"\ndraft_before = "1h"\n'
    )


def _import_fresh(environ: dict[str, str], tmp_path: Path, subscribers: int) -> None:
    import json

    published = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    comparisons = tmp_path / "c.json"
    comparisons.write_text(
        json.dumps({"comparisons": [comparison_dict("fresh-one", published_at=published)]})
    )
    people = tmp_path / "p.csv"
    people.write_text("email\n" + "".join(f"s{i}@example.com\n" for i in range(subscribers)))
    for args in (
        ["db", "upgrade"],
        ["import", "comparisons", str(comparisons)],
        ["import", "subscribers", str(people)],
    ):
        done = run(args, environ, tmp_path)
        assert done.returncode == 0, done.stderr


def test_run_now_twice_sends_once(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    _import_fresh(env, tmp_path, 3)
    _due_now_schedule(tmp_path / "schedules")
    assert run(["schedule", "sync", str(tmp_path / "schedules")], env, tmp_path).returncode == 0
    first = run(["schedule", "run-now", "weekly-ai-tool-verdicts"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    second = run(["schedule", "run-now", "weekly-ai-tool-verdicts"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    outbox = tmp_path / "outbox"
    files = sorted(p.name for p in outbox.glob("*.eml"))
    assert len(files) == 3 and not [f for f in files if f.count(".") > 1]


def test_two_scheduler_processes_at_once_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    clean.update(
        NEWSLETTER_DATABASE_URL=postgres_url,
        NEWSLETTER_MAIL_BACKEND=f"file://{tmp_path / 'outbox'}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        NEWSLETTER_JOURNAL_DIR=str(tmp_path / "journal"),
    )
    _import_fresh(clean, tmp_path, 25)
    _due_now_schedule(tmp_path / "schedules")
    assert run(["schedule", "sync", str(tmp_path / "schedules")], clean, tmp_path).returncode == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "newsletter.cli", "scheduler"],
            env=clean,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    engine = make_engine(postgres_url)
    try:
        deadline = time.monotonic() + 90
        while True:
            with Session(engine) as session:
                rows = session.exec(select(Edition.status)).all()
            if rows == ["sent"]:
                break
            assert time.monotonic() < deadline, f"not sent in time: {rows}"
            time.sleep(0.5)
        time.sleep(2)  # both schedulers tick again: nothing more may happen
        with Session(engine) as session:
            editions = session.exec(select(Edition)).all()
            deliveries = session.exec(select(Delivery.status)).all()
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        logs = [p.communicate(timeout=30) for p in procs]
        engine.dispose()
    assert len(editions) == 1 and editions[0].status == "sent", logs
    assert deliveries == ["sent"] * 25
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 25 and not [f for f in files if f.name.count(".") > 1]
    assert sum("started edition" in err for _, err in logs) == 1, logs


def test_run_serves_the_web_app_with_scheduler_and_worker(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _import_fresh(env, tmp_path, 2)
    _due_now_schedule(tmp_path / "schedules")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter.cli",
            "run",
            "--port",
            str(port),
            "--schedules-dir",
            str(tmp_path / "schedules"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        page = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe", timeout=2) as r:
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert "Subscribe" in page
        outbox = tmp_path / "outbox"
        while len(list(outbox.glob("*.eml"))) < 2:  # the scheduler started it, the worker sent it
            assert time.monotonic() < deadline, "the due edition was not sent"
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_doctor_says_what_is_wrong_and_exits_1(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    broken = dict(env, NEWSLETTER_SECRET_KEY="short")
    result = run(["doctor"], broken, tmp_path)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "secret key" in result.stdout
    assert "short" not in result.stdout.replace("too short", "").replace("shorter", "")
    assert run(["db", "upgrade"], env, tmp_path).returncode == 0
    healthy = run(["doctor"], env, tmp_path)
    assert healthy.returncode == 0, healthy.stdout
