"""A PostgreSQL restart in the middle of a send: workers ride it out, the CLI explains it.

Each test runs its own PostgreSQL cluster (``initdb`` into a temporary folder, its own port)
so it can restart it without disturbing the shared server other tests use. The restart
happens while the send is running, after a number of messages went out; then:

- ``newsletter worker --concurrency 2`` goes on by itself once the database is back, and
  everyone gets the edition exactly once;
- ``newsletter edition send`` stops with one paragraph saying what happened, that nothing
  is lost, and what to run, and the command it names finishes the send with no duplicate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlmodel import Session

from newsletter.config import Settings
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.database import make_engine

from .conftest import SECRET, free_port
from .test_workers import _prepare

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class Cluster:
    """A private PostgreSQL cluster this test may stop and start."""

    def __init__(self, root: Path) -> None:
        if PG_BIN is None:  # pragma: no cover - environment problem
            pytest.fail("PostgreSQL's server binaries are not installed (/usr/lib/postgresql)")
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "pg.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        assert PG_BIN is not None
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.data.mkdir(mode=0o700)
        if os.geteuid() == 0:  # pytest's own folders are closed to other users
            shutil.chown(self.data.parent, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def restart(self) -> None:
        """Stop (fast: every connection is cut mid-transaction), then start again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(1.0)  # the database is really gone for a moment, as in a real restart
        self.start()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    c = Cluster(root)
    try:
        c.init()
        yield c
    finally:
        try:
            c.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


SUBSCRIBERS = 1500


def _env(url: str, outbox: Path, journal: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_MAIL_BACKEND=f"file://{outbox}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        NEWSLETTER_BATCH_SIZE="25",
        NEWSLETTER_RATE_LIMIT="300/s",  # a send of a few seconds, so the restart lands inside
        NEWSLETTER_JOURNAL_DIR=str(journal),
        COLUMNS="200",
    )
    return env


def _restart_mid_send(cluster: Cluster, outbox: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(list(outbox.glob("*.eml"))) < 200:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the send did not get going"
        time.sleep(0.05)
    cluster.restart()


def _mailed_once(outbox: Path) -> None:
    recipients = Counter(
        message_from_bytes(f.read_bytes())["To"].split("<")[-1].strip(">")
        for f in outbox.glob("*.eml")
    )
    duplicates = [r for r, n in recipients.items() if n > 1]
    assert not duplicates, f"mailed twice: {duplicates[:5]}"
    assert len(recipients) == SUBSCRIBERS


def _all_sent(url: str, edition_id: int) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            assert ledger.counts(session, edition_id=edition_id)["sent"] == SUBSCRIBERS
            assert store.edition_status(session, edition_id=edition_id) == "sent"
    finally:
        engine.dispose()


def test_a_worker_with_several_senders_rides_out_a_database_restart(
    cluster: Cluster, settings: Settings, tmp_path: Path
) -> None:
    pg = settings.model_copy(update={"database_url": cluster.url})
    edition_id = _prepare(cluster.url, pg, tmp_path, subscribers=SUBSCRIBERS)
    outbox = tmp_path / "outbox"
    worker = subprocess.Popen(
        [sys.executable, "-m", "newsletter.cli", "worker", "--concurrency", "2", "--once"]
        + ["--poll", "0.5"],
        env=_env(cluster.url, outbox, tmp_path / "journal"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _restart_mid_send(cluster, outbox, worker)
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err
    assert "Traceback" not in err and "Pipeline" not in err, err
    assert "database connection lost" in err, err  # it said what happened, once per pass
    _mailed_once(outbox)
    _all_sent(cluster.url, edition_id)


def test_edition_send_explains_a_database_restart_in_one_paragraph(
    cluster: Cluster, settings: Settings, tmp_path: Path
) -> None:
    pg = settings.model_copy(update={"database_url": cluster.url})
    edition_id = _prepare(cluster.url, pg, tmp_path, subscribers=SUBSCRIBERS)
    outbox = tmp_path / "outbox"
    env = _env(cluster.url, outbox, tmp_path / "journal")
    command = [sys.executable, "-m", "newsletter.cli", "edition", "send", str(edition_id)]
    sender = subprocess.Popen(
        [*command, "--concurrency", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _restart_mid_send(cluster, outbox, sender)
    out, err = sender.communicate(timeout=180)
    assert sender.returncode == 1, (out, err)
    assert "Traceback" not in err and "Pipeline" not in err and "psycopg" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "lost its database connection" in err and "Nothing is lost" in err, err
    assert f"newsletter edition send {edition_id}" in err, err
    # The command it names finishes the send, and nobody is mailed twice.
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    _mailed_once(outbox)
    _all_sent(cluster.url, edition_id)


def test_the_scheduler_tells_an_outage_once_and_carries_on_after_it(
    cluster: Cluster, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from newsletter.service.runner import build_scheduler
    from newsletter.storage.database import upgrade

    engine = make_engine(cluster.url)
    upgrade(engine)
    pg = settings.model_copy(update={"database_url": cluster.url})
    aps = build_scheduler(pg, engine, send=True, blocking=False)
    tick = aps.get_job("tick")
    assert tick is not None
    try:
        tick.func()  # the database is up: nothing to say
        cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
        with caplog.at_level("WARNING", logger="newsletter.service.runner"):
            tick.func()
            tick.func()  # still down: not told again
            cluster.start()
            tick.func()
    finally:
        engine.dispose()
    told = [r.getMessage() for r in caplog.records if r.name == "newsletter.service.runner"]
    assert len(told) == 2, told
    assert told[0].startswith("database connection lost (") and "nothing is lost" in told[0]
    assert told[1].startswith("database connection is back after")


def test_web_pages_answer_503_while_the_database_is_away(
    cluster: Cluster, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a 500 and a traceback per request. Now a page saying to try again (a webhook
    provider retries a 503), one log line, and normal answers once it is back."""
    from fastapi.testclient import TestClient

    from newsletter.storage.database import upgrade
    from newsletter.web.app import create_app

    engine = make_engine(cluster.url)
    upgrade(engine)
    pg = settings.model_copy(update={"database_url": cluster.url})
    try:
        with TestClient(create_app(pg, engine=engine), raise_server_exceptions=True) as client:
            assert client.get("/archive").status_code == 200
            cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
            with caplog.at_level("WARNING", logger="newsletter.web.app"):
                away = client.get("/archive")
                form = client.post("/subscribe", data={"email": "x@example.com"})
            assert away.status_code == 503 and "try again in a minute" in away.text
            assert form.status_code == 503 and "nothing was changed" in form.text
            assert [r.getMessage().split(":")[0] for r in caplog.records] == [
                "GET /archive",
                "POST /subscribe",
            ]
            cluster.start()
            assert client.get("/archive").status_code == 200
    finally:
        engine.dispose()
