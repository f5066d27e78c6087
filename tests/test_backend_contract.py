"""The shipped contract suite (:mod:`newsletter.testing`) run against the built-in backends.

The same class a plugin backend's tests subclass: memory, file and SMTP (a real aiosmtpd
server), and two email APIs over a real local HTTP server replaying their recorded answers
(Postmark, and Resend, which takes an idempotency key).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.backends import MailBackend, backend_from_url
from newsletter.backends import memory as memory_module
from newsletter.testing import BackendContract
from tests.conftest import APIStub, SMTPSink

FIXTURES = Path(__file__).parent / "fixtures" / "http"


class TestMemoryContract(BackendContract):
    bad_urls = {"memory://?retain=maybe": "retain"}

    def make_backend(self) -> MailBackend:
        return backend_from_url("memory://")

    def delivered(self) -> list[bytes]:
        return [m.data for m in memory_module.outbox]


class TestFileContract(BackendContract):
    bad_urls = {"file://": "folder"}

    @pytest.fixture(autouse=True)
    def _outbox(self, tmp_path: Path) -> None:
        self.outbox = tmp_path / "outbox"

    def make_backend(self) -> MailBackend:
        return backend_from_url(f"file://{self.outbox}")

    def _files(self) -> list[Path]:
        # Sample keys are e1-s1, e1-s2...: name order is send order.
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []

    def delivered(self) -> list[bytes]:
        return [p.read_bytes() for p in self._files()]

    def idempotency_keys(self) -> list[str]:
        """The file backend names each file after the message's key."""
        return [p.name.removesuffix(".eml") for p in self._files()]


class TestSMTPContract(BackendContract):
    bad_urls = {"smtp:///nohost": "host", "smtp://host?timeout=soon": "timeout"}

    @pytest.fixture(autouse=True)
    def _server(self, smtp_server: SMTPSink) -> None:
        self.server = smtp_server

    def make_backend(self) -> MailBackend:
        return backend_from_url(self.server.url)

    def delivered(self) -> list[bytes]:
        return [e.content for e in self.server.received]


class _APIContract(BackendContract):
    """An email API behind the local stub, answering its recorded success to every POST."""

    url = ""
    success = ""

    @pytest.fixture(autouse=True)
    def _stub(self, api_stub: APIStub) -> None:
        self.stub = api_stub
        api_stub.reply(200, (FIXTURES / self.success).read_text())

    def make_backend(self) -> MailBackend:
        return backend_from_url(f"{self.url}?endpoint={self.stub.url}")

    def delivered(self) -> list[bytes]:
        return [c.body for c in self.stub.calls if c.method == "POST"]


class TestPostmarkContract(_APIContract):
    url = "postmark://pm-secret-token@"
    success = "postmark/send-ok.json"
    secrets = ("pm-secret-token",)
    bad_urls = {
        "postmark://@": "server token",
        "postmark://pm-secret-token@?stream=": "stream",
        "postmark://pm-secret-token@?endpoint=ftp://x": "endpoint",
    }


class TestResendContract(_APIContract):
    url = "resend://re_secret_key@"
    success = "resend/send-ok.json"
    secrets = ("re_secret_key",)
    bad_urls = {"resend://@": "API key", "resend://re_secret_key@?regoin=eu": "regoin"}

    def idempotency_keys(self) -> list[str]:
        return [
            {k.lower(): v for k, v in c.headers.items()}["idempotency-key"]
            for c in self.stub.calls
            if c.method == "POST"
        ]


def test_the_engine_never_imports_pytest() -> None:
    """newsletter.testing is the only module that imports pytest, and nothing imports it."""
    code = (
        "import sys, newsletter.backends, newsletter.cli, newsletter.doctor, newsletter.web.app;"
        "from newsletter.backends import backend_from_url; backend_from_url('memory://');"
        "assert 'pytest' not in sys.modules and 'newsletter.testing' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
