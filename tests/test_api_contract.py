"""The backend contract, run against every email-API backend over a real local HTTP server.

The same checks as ``test_backends.py``'s contract (one result per message, in order, a closed
status, the provider's id kept, one reused session, nothing on an empty batch, a 5xx is
transient), with each provider's recorded success body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import SendStatus, backend_from_url
from newsletter.backends.http import HTTPBackend
from newsletter.config import Settings
from newsletter.edition.personalization import Recipient
from newsletter.storage import store
from tests.conftest import PINNED_DATE

FIXTURES = Path(__file__).parent / "fixtures" / "http"
PROVIDERS = {
    # scheme: (URL before "?endpoint=", success status, success body file, success headers)
    "postmark": ("postmark://token@", 200, "postmark/send-ok.json", {}),
    "sendgrid": ("sendgrid://key@", 202, None, {"X-Message-Id": "sg-1"}),
    "resend": ("resend://key@", 200, "resend/send-ok.json", {}),
    "mailgun": ("mailgun://key@mg.example.com", 200, "mailgun/send-ok.json", {}),
    "ses": ("ses://AKIDEXAMPLE:secret@us-east-1", 200, "ses/send-ok.json", {}),
}


@pytest.fixture(params=sorted(PROVIDERS))
def api(request: pytest.FixtureRequest, api_stub: Any) -> tuple[HTTPBackend, Any]:
    url, status, body, headers = PROVIDERS[request.param]
    api_stub.reply(status, (FIXTURES / body).read_text() if body else "", headers)
    backend = backend_from_url(f"{url}?endpoint={api_stub.url}")
    assert isinstance(backend, HTTPBackend)
    return backend, api_stub


def _messages(seeded: Session, settings: Settings, draft: int) -> list[Any]:
    edition = store.get_edition(seeded, edition_id=draft)
    template = publish.prepare(seeded, edition=edition, settings=settings)[1]
    signer = publish.signer_for(settings)
    return [
        template.build(Recipient(i, f"c{i}@example.com", f"C {i}"), signer, now=PINNED_DATE)
        for i in range(3)
    ]


def test_contract_three_messages(
    api: tuple[HTTPBackend, Any], seeded: Session, settings: Settings, draft: int
) -> None:
    backend, stub = api
    messages = _messages(seeded, settings, draft)
    with backend:
        session = backend.session
        results = backend.send_messages(messages)
        assert backend.session is session  # one session for the batch
    assert [r.status for r in results] == [SendStatus.queued] * 3
    assert all(r.provider_id for r in results) and all(r.status.delivered for r in results)
    assert len(stub.calls) == 3
    for call, message in zip(stub.calls, messages, strict=True):
        assert call.method == "POST"
        assert message.recipient.encode() in call.body
    assert backend.session is None  # closed by the context that opened it


def test_contract_empty_batch_describe_and_transient_5xx(
    api: tuple[HTTPBackend, Any], seeded: Session, settings: Settings, draft: int
) -> None:
    backend, stub = api
    assert backend.send_messages([]) == [] and stub.calls == []
    description = backend.describe()
    assert description and "secret" not in description and "key@" not in description
    stub.replies.clear()
    stub.reply(503, '{"message": "service unavailable"}')
    results = backend.send_messages(_messages(seeded, settings, draft)[:1])
    assert results[0].status == SendStatus.deferred and results[0].code == 503
