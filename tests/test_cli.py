"""The command line, run as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.config import Settings

from .conftest import EXAMPLES, REPO, SECRET, comparison_dict

README = (REPO / "README.md").read_text(encoding="utf-8")


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    clean.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        NEWSLETTER_MAIL_BACKEND=f"file://{tmp_path / 'outbox'}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        COLUMNS="200",
    )
    return clean


def test_demo_twice_on_a_fresh_directory_sends_nothing_twice(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    first = run(["demo", "--dir", str(tmp_path / "demo")], bare, tmp_path)
    assert first.returncode == 0, first.stderr
    outbox = tmp_path / "demo" / "outbox"
    sent = sorted(p.name for p in outbox.glob("*.eml"))
    assert len(sent) == 11 and "sent 11" in first.stdout
    assert (tmp_path / "demo" / "preview.html").read_text().count("Hi Sample Reader,") == 1
    assert "Hi Sample Reader," in (tmp_path / "demo" / "preview.txt").read_text()
    second = run(["demo", "--dir", str(tmp_path / "demo")], bare, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "nothing sent again" in second.stdout
    assert sorted(p.name for p in outbox.glob("*.eml")) == sent


def test_full_cli_path(env: dict[str, str], tmp_path: Path) -> None:
    assert run(["edition", "list"], env, tmp_path).returncode == 1  # not migrated yet
    assert run(["db", "upgrade"], env, tmp_path).returncode == 0
    out = run(["import", "comparisons", str(EXAMPLES)], env, tmp_path)
    assert out.returncode == 0 and "8 created" in out.stdout
    csv = tmp_path / "s.csv"
    csv.write_text("email,name\nok@example.com,Ok\nnope,No\n")
    out = run(["import", "subscribers", str(csv)], env, tmp_path)
    assert out.returncode == 0 and "line 3 (nope): email:" in out.stderr
    draft = run(["edition", "draft", "--at", "2026-11-25T12:00:00+00:00"], env, tmp_path)
    assert draft.returncode == 0, draft.stderr
    edition_id = draft.stdout.strip()
    assert edition_id.isdigit() and "4 comparison(s)" in draft.stderr
    preview = tmp_path / "p.txt"
    out = run(
        ["edition", "preview", edition_id, "--format", "text", "--out", str(preview)], env, tmp_path
    )
    assert out.returncode == 0 and "THE CALL: Ship Patchwright Agent" in preview.read_text()
    sent = run(["edition", "send", edition_id], env, tmp_path)
    assert sent.returncode == 0 and "sent 1, failed 0" in sent.stdout
    again = run(["edition", "send", edition_id], env, tmp_path)
    assert "nothing sent again" in again.stdout
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_bad_import_prints_every_problem_and_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    run(["db", "upgrade"], env, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"comparisons": [comparison_dict("a-one", url="nope"), comparison_dict("b", tools=[])]}
        )
    )
    out = run(["import", "comparisons", str(bad)], env, tmp_path)
    assert out.returncode == 1
    assert "record 1 (a-one): url:" in out.stderr and "record 2 (b): tools:" in out.stderr
    assert "nothing was imported" in out.stderr and "Traceback" not in out.stderr


def test_readable_errors(env: dict[str, str], tmp_path: Path) -> None:
    run(["db", "upgrade"], env, tmp_path)
    cases = [
        (["edition", "send", "999"], "edition 999 does not exist"),
        (["edition", "draft", "--at", "2026-12-09"], "no new comparisons"),
        (["edition", "draft", "--at", "someday"], "--at: 'someday' is not an ISO 8601"),
        (
            ["edition", "send", "1", "--backend", "carrier-pigeon://x"],
            "no mail backend for carrier-pigeon://",
        ),
    ]
    for args, message in cases:
        out = run(args, env, tmp_path)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    weak = {**env, "NEWSLETTER_SECRET_KEY": "change-me"}
    run(["import", "comparisons", str(EXAMPLES)], env, tmp_path)
    draft = run(["edition", "draft", "--at", "2026-11-25"], env, tmp_path).stdout.strip()
    out = run(["edition", "send", draft], weak, tmp_path)
    assert out.returncode == 1 and "NEWSLETTER_SECRET_KEY" in out.stderr
    assert "change-me" not in out.stderr  # secrets never printed


def test_every_setting_and_command_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        var = field.alias or f"NEWSLETTER_{name.upper()}"
        assert f"`{var}`" in README, f"{var} is not in the README configuration table"
    from typer.core import TyperGroup
    from typer.main import get_command

    from newsletter.cli import app

    root = get_command(app)
    assert isinstance(root, TyperGroup)
    commands = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        commands += [f"newsletter {name} {s}" for s in subs] if subs else [f"newsletter {name}"]
    for command in commands:
        assert re.search(rf"`{re.escape(command)}[ `]", README), f"{command} not in README"


def test_ci_runs_the_readme_test_command() -> None:
    command = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
    )
    assert command in README
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert command.replace("pip install", "pip install -q") in ci


def test_newsletters_add_validates_and_refuses_duplicates(
    env: dict[str, str], tmp_path: Path
) -> None:
    run(["db", "upgrade"], env, tmp_path)
    ok = run(
        ["newsletters", "add", "tool-deals", "--name", "Tool Deals", "--timezone", "Europe/Berlin"],
        env,
        tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    cases = [
        (["newsletters", "add", "Bad Slug", "--name", "X"], "expected lower-case words"),
        (
            ["newsletters", "add", "x-y", "--name", "X", "--timezone", "Mars/Base"],
            "unknown IANA time zone",
        ),
        (
            ["newsletters", "add", "x-z", "--name", "X", "--site-url", "javascript:alert(1)"],
            "error: --site-url: expected an ASCII http(s) URL",
        ),
        (["newsletters", "add", "tool-deals", "--name", "Other"], "already exists"),
    ]
    for args, message in cases:
        out = run(args, env, tmp_path)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
    listed = run(["newsletters", "list"], env, tmp_path).stdout
    assert "tool-deals\tTool Deals\tEurope/Berlin" in listed and "x-y" not in listed


def test_infrastructure_errors_are_readable_and_hide_passwords(
    env: dict[str, str], tmp_path: Path
) -> None:
    down = {**env, "NEWSLETTER_DATABASE_URL": "postgresql://bob:Sup3rS3cret@127.0.0.1:1/x"}
    out = run(["db", "upgrade"], down, tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("error: database:")
    assert "Sup3rS3cret" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    run(["db", "upgrade"], env, tmp_path)
    for url in ["//bob:Sup3rS3cret@host:25", "smtp://bob:pa/Sup3rS3cret@host:25"]:
        out = run(["edition", "send", "1", "--backend", url], env, tmp_path)
        assert out.returncode == 1 and "Sup3rS3cret" not in out.stderr, out.stderr


def test_operator_commands(env: dict[str, str], tmp_path: Path) -> None:
    run(["db", "upgrade"], env, tmp_path)
    run(["import", "comparisons", str(EXAMPLES)], env, tmp_path)
    csv = tmp_path / "s.csv"
    csv.write_text("email\n" + "".join(f"o{i}@example.com\n" for i in range(6)))
    run(["import", "subscribers", str(csv)], env, tmp_path)
    edition = run(["edition", "draft", "--at", "2026-11-25"], env, tmp_path).stdout.strip()
    out = run(["edition", "start", edition], env, tmp_path)
    assert out.returncode == 0 and "6 deliveries queued" in out.stdout
    assert (
        run(["edition", "pause", edition, "--reason", "checking a typo"], env, tmp_path).returncode
        == 0
    )
    status = run(["edition", "status", edition], env, tmp_path).stdout
    assert "paused" in status and "reason: checking a typo" in status and "pending 6" in status
    blocked = run(["edition", "send", edition], env, tmp_path)
    assert blocked.returncode == 1 and "resume" in blocked.stderr
    assert run(["edition", "resume", edition], env, tmp_path).returncode == 0
    sent = run(["edition", "send", edition, "--concurrency", "2"], env, tmp_path)
    assert sent.returncode == 0, sent.stderr
    status = run(["edition", "status", edition], env, tmp_path).stdout
    assert "sent 6" in status
    out = run(["edition", "retry-failed", edition], env, tmp_path)
    assert "0 deliveries re-queued" in out.stdout
    # Who did what, oldest first: started, paused (with its reason), resumed, sent.
    history = [
        line.split(" UTC ", 1)[1]
        for line in run(["edition", "status", edition], env, tmp_path).stdout.splitlines()
        if " UTC " in line and " by " in line
    ]
    user = getpass.getuser()
    assert history == [
        f"started by cli ({user}): 6 recipients",
        f"paused by cli ({user}): checking a typo",
        f"resumed by cli ({user})",
        "sent by engine: sent 6",
        f"retried by cli ({user}): 0 failed deliveries re-queued",
    ]
    out = run(["edition", "cancel", edition], env, tmp_path)
    assert out.returncode == 1 and "can't cancel it" in out.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 6


def test_operator_removes_a_subscriber_and_the_history_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(["db", "upgrade"], env, tmp_path).returncode == 0
    csv = tmp_path / "people.csv"
    csv.write_text("email,name\nAda@Example.com,Ada\nbob@example.com,\n")
    assert run(["import", "subscribers", str(csv)], env, tmp_path).returncode == 0
    removed = run(["subscribers", "remove", "ada@example.com"], env, tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert "removed from weekly-ai-tool-verdicts" in removed.stdout
    again = run(["subscribers", "remove", "ada@example.com"], env, tmp_path)
    assert "already off" in again.stdout
    shown = run(["subscribers", "show", "ADA@example.com"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "weekly-ai-tool-verdicts\tunsubscribed" in shown.stdout
    assert re.search(r"\tsubscribed\timport\n.*\tunsubscribed\toperator", shown.stdout)
    everything = run(["subscribers", "remove", "bob@example.com", "--all"], env, tmp_path)
    assert "every newsletter (suppressed)" in everything.stdout
    assert (
        "suppressed: unsubscribed_all"
        in run(["subscribers", "show", "bob@example.com"], env, tmp_path).stdout
    )
    missing = run(["subscribers", "show", "nobody@example.com"], env, tmp_path)
    assert missing.returncode == 1 and "no subscriber" in missing.stderr


def test_the_one_error_handler_prints_the_problems_the_line_and_the_hint_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every error a person can fix goes through one handler: the problems first, then one
    red line, the hint once (a BackendError already carries it in its text), its exit code."""
    import typer

    from newsletter.backends import BackendError
    from newsletter.cli.common import readable_errors
    from newsletter.errors import NewsletterError

    class TwoProblems(NewsletterError):
        exit_code = 3
        hint = "fix the file, then run it again"
        problems = ("line 2: email: not an address", "line 5: name: too long")

        def headline(self) -> str:
            return "2 problem(s); nothing was imported"

    paused = BackendError("relay refused the sender")
    paused.hint = "edition 7 is paused: fix this, then `newsletter edition resume 7`"

    def run(error: Exception) -> tuple[int, list[str]]:
        @readable_errors
        def command() -> None:
            raise error

        with pytest.raises(typer.Exit) as exited:
            command()
        return exited.value.exit_code, capsys.readouterr().err.splitlines()

    assert run(TwoProblems("not shown")) == (
        3,
        [
            "line 2: email: not an address",
            "line 5: name: too long",
            "error: 2 problem(s); nothing was imported",
            "fix the file, then run it again",
        ],
    )
    assert run(paused) == (
        1,
        [
            "error: relay refused the sender; edition 7 is paused: fix this, then "
            "`newsletter edition resume 7`"
        ],
    )
