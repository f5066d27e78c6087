"""The outbox backend against the engine's shipped backend contract, plus its own options."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
from newsletter_outbox import OutboxBackend, read_outbox

from newsletter.backends import MailBackend, backend_from_url
from newsletter.testing import BackendContract, sample_messages


class TestOutboxContract(BackendContract):
    bad_urls = {"outbox://": "needs a file", "outbox:///tmp/o.jsonl?fsnyc=1": "fsnyc"}

    @pytest.fixture(autouse=True)
    def _outbox(self, tmp_path: Path) -> None:
        self.path = tmp_path / "spool" / "outbox.jsonl"

    def make_backend(self) -> MailBackend:
        # Through the entry point, as the engine finds it.
        return backend_from_url(f"outbox://{self.path}")

    def delivered(self) -> list[bytes]:
        return [base64.b64decode(r["data"]) for r in read_outbox(self.path)]

    def idempotency_keys(self) -> list[str]:
        return [r["key"] for r in read_outbox(self.path)]


def test_the_entry_point_names_the_backend(tmp_path: Path) -> None:
    backend = backend_from_url(f"outbox://{tmp_path}/o.jsonl?fsync=1")
    assert isinstance(backend, OutboxBackend) and backend.fsync


def test_probe_finds_an_unusable_path(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert OutboxBackend(folder).probe().ok is False
    fine = OutboxBackend(tmp_path / "new" / "outbox.jsonl")
    assert fine.probe().ok is True and not (tmp_path / "new").exists()


def test_an_unsafe_recipient_is_invalid_and_not_written(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    message = dataclasses.replace(sample_messages(1)[0], recipient="a@x.com\r\nBcc: b@y.com")
    [result] = OutboxBackend(path).send_messages([message])
    assert result.status == "invalid" and read_outbox(path) == []
