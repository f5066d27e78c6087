"""A third-party webhook provider, registered only through the ``newsletter.webhooks``
entry-point group, is served at ``POST /webhooks/<name>`` with the secret it declares, and
checked by the doctor, with no edit to the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.config import Settings
from newsletter.doctor.settings_checks import check_webhooks
from newsletter.web.app import create_app
from newsletter.webhooks import EventKind, ProviderEvent, WebhookProvider, WebhookRejected, registry
from newsletter.webhooks.base import header, load_json

SECRET = "acme-shared-secret"


def parse_acme(
    headers: Mapping[str, str], body: bytes, *, secret: str, now: datetime | None = None
) -> list[ProviderEvent]:
    """Acme sends its shared secret in a header and one bounce per request."""
    if header(headers, "X-Acme-Secret") != secret:
        raise WebhookRejected("bad Acme secret")
    record = load_json(body)
    return [
        ProviderEvent(
            provider="acme",
            event_id=str(record["id"]),
            kind=EventKind.bounced_hard,
            email=str(record["email"]),
            provider_message_id=None,
            occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
            detail="550 no such user",
        )
    ]


acme = WebhookProvider("acme", parse_acme, "ACME_WEBHOOK_SECRET")
misnamed = WebhookProvider("other", parse_acme, "ACME_WEBHOOK_SECRET")


@pytest.fixture
def acme_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    real = entry_points

    def patched(*, group: str) -> list[EntryPoint]:
        extra = [
            EntryPoint("acme", "tests.test_webhook_plugins:acme", group),
            EntryPoint("misnamed", "tests.test_webhook_plugins:misnamed", group),
        ]
        return [*real(group=group), *extra]

    monkeypatch.setattr(registry, "entry_points", patched)
    monkeypatch.delenv("ACME_WEBHOOK_SECRET", raising=False)


@pytest.fixture
def client(
    acme_registered: None, settings: Settings, engine: Engine, seeded: Session
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine)) as c:
        yield c


def post(client: TestClient, secret: str, event_id: int = 1) -> tuple[int, object]:
    body = json.dumps({"id": event_id, "email": "gone@example.com"})
    response = client.post(
        "/webhooks/acme",
        content=body,
        headers={"Content-Type": "application/json", "X-Acme-Secret": secret},
    )
    return response.status_code, response.json()


def test_a_plugin_provider_is_served_with_its_own_secret(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, SECRET)[0] == 404, "no secret set: the endpoint does not exist"
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    assert post(client, SECRET) == (200, {"received": 1})
    assert post(client, "guessed", event_id=2)[0] == 401
    assert client.post("/webhooks/nobody", content=b"{}").status_code == 404


def test_a_built_in_secret_is_still_read_from_the_settings(
    acme_registered: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = registry.provider("postmark")
    assert hook is not None and hook.secret_variable == "NEWSLETTER_WEBHOOK_POSTMARK"
    configured = settings.model_copy(update={"webhook_postmark": "u:p"})
    assert registry.secret_for(hook, configured, {}) == "u:p"
    assert registry.secret_for(hook, settings, {"NEWSLETTER_WEBHOOK_POSTMARK": "x:y"}) == ""
    assert "acme" in registry.names()


def test_an_entry_point_naming_something_else_is_refused(acme_registered: None) -> None:
    with pytest.raises(TypeError, match="misnamed"):
        registry.provider("misnamed")


def test_the_doctor_checks_a_plugin_providers_secret(
    acme_registered: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    uses_acme = settings.model_copy(update={"mail_backend": "acme://key@"})
    [missing] = check_webhooks(uses_acme, 1.0)
    assert missing.ok is None and "ACME_WEBHOOK_SECRET is empty" in missing.summary
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    [present] = check_webhooks(uses_acme, 1.0)
    assert present.ok is True and "/webhooks/acme" in present.summary


def test_a_plugins_secret_is_read_from_the_environment_then_the_dotenv_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's secret may sit in ``.env`` beside the built-ins' (the settings read that
    file from the working directory); the process environment wins, as for settings."""
    monkeypatch.chdir(tmp_path)
    assert registry.secret_for(acme, settings, {}) == ""
    (tmp_path / ".env").write_text(
        f"NEWSLETTER_BASE_URL=https://x.example\nACME_WEBHOOK_SECRET={SECRET}\n"
    )
    assert registry.secret_for(acme, settings, {}) == SECRET
    assert registry.secret_for(acme, settings, {"ACME_WEBHOOK_SECRET": "from-env"}) == "from-env"


def test_a_plugins_webhook_secret_is_masked_like_the_built_ins(
    acme_registered: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider that echoes the plugin's secret in an error has it masked before it is
    stored or shown, as a built-in's would be: read from the variable the plugin declares
    (this process's environment by default), for the mail backends in use. A plugin that
    can't be served (it names another provider) stops nothing."""
    from newsletter.sending.redaction import redactor_for

    uses_acme = settings.model_copy(update={"mail_backend": "acme://key@ smtp://relay:25"})
    echoed = f"401 webhook secret {SECRET} refused"
    assert redactor_for(uses_acme, {}).scrub(echoed) == echoed  # no secret set: none to mask
    assert redactor_for(uses_acme, {"ACME_WEBHOOK_SECRET": SECRET}).scrub(echoed) == (
        "401 webhook secret *** refused"
    )
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    assert redactor_for(uses_acme).scrub(echoed) == "401 webhook secret *** refused"
    broken = settings.model_copy(update={"mail_backend": "misnamed://x"})
    assert redactor_for(broken).scrub(echoed) == echoed


def test_the_registry_reads_the_entry_points_once_not_per_request(
    settings: Settings, engine: Engine, seeded: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every webhook request asks the registry for its provider; the installed packages'
    metadata is scanned once per process, not per request."""
    real, scans = entry_points, []

    def counted(*, group: str) -> list[EntryPoint]:
        scans.append(group)
        return [*real(group=group), EntryPoint("acme", "tests.test_webhook_plugins:acme", group)]

    monkeypatch.setattr(registry, "entry_points", counted)
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    with TestClient(create_app(settings, engine=engine)) as client:
        assert [post(client, SECRET, event_id=i)[0] for i in range(1, 6)] == [200] * 5
    assert scans.count("newsletter.webhooks") == 1
    assert registry.names() == sorted({*registry.names(), "acme"})
    assert scans.count("newsletter.webhooks") == 1
