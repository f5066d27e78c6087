"""Webhook providers, found by name through the ``newsletter.webhooks`` entry-point group.

Each entry point names a :class:`~newsletter.webhooks.base.WebhookProvider` (the provider's
name, its parse function and its secret's variable). The built-ins register there too (see
``pyproject.toml``), so a third-party package adds a provider with
``[project.entry-points."newsletter.webhooks"] acme = "pkg.hooks:webhook"`` and no edit here,
in the web app or in the settings. The names match the send backends' URL schemes.

Loaded lazily, one provider when its endpoint is asked for, and apart from the package so that
importing the event types (:mod:`newsletter.webhooks.base`), which every send does, does not
import every provider's parser and what they need (requests, X.509 for SNS): 270 modules and
17 MiB in each sender process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from pydantic_settings import BaseSettings

from newsletter.webhooks.base import WebhookProvider

ENTRY_POINT_GROUP = "newsletter.webhooks"
_SETTINGS_PREFIX = "NEWSLETTER_"

__all__ = [
    "ENTRY_POINT_GROUP",
    "names",
    "plugin_secrets",
    "provider",
    "providers",
    "secret_for",
]


def _registered() -> dict[str, EntryPoint]:
    return _table(entry_points)


@functools.cache
def _table(lookup: Callable[..., Iterable[EntryPoint]]) -> dict[str, EntryPoint]:
    """Name to entry point (the first one registered under a name wins), read once per
    process: reading them scans every installed package's metadata (about 7 ms of CPU here),
    and a webhook endpoint asks on every request. A package installed later is seen after a
    restart, as any code is. Keyed by the lookup function, so a test that substitutes it
    gets a table of its own."""
    table: dict[str, EntryPoint] = {}
    for ep in lookup(group=ENTRY_POINT_GROUP):
        table.setdefault(ep.name, ep)
    return table


def names() -> list[str]:
    """Every registered provider name, without loading any."""
    return sorted(_registered())


def provider(name: str) -> WebhookProvider | None:
    """The provider registered as ``name`` (only its module is imported), or None when none
    is; an entry point that names something else is refused, not served."""
    ep = _registered().get(name)
    if ep is None:
        return None
    found = ep.load()
    if not isinstance(found, WebhookProvider) or found.name != name:
        raise TypeError(
            f"entry point {name} in {ENTRY_POINT_GROUP} must name a WebhookProvider called {name!r}"
        )
    return found


def providers() -> dict[str, WebhookProvider]:
    """Every registered provider, loaded (for reports and tests; requests use
    :func:`provider`)."""
    found = {name: provider(name) for name in names()}
    return {name: p for name, p in found.items() if p is not None}


def secret_for(hook: WebhookProvider, settings: BaseSettings, environ: Mapping[str, str]) -> str:
    """The secret ``hook`` declares, "" when unset (its endpoint is then off).

    A ``NEWSLETTER_`` variable that is also a setting (the built-ins' ``webhook_postmark``...)
    is read from ``settings``, so ``.env`` and settings passed in code keep working; any other
    (a plugin's) from ``environ``, then from the settings' ``.env`` file.
    """
    variable = hook.secret_variable
    field = variable.removeprefix(_SETTINGS_PREFIX).lower()
    if variable.startswith(_SETTINGS_PREFIX) and field in type(settings).model_fields:
        return str(getattr(settings, field) or "")
    if variable in environ:
        return environ[variable]
    return _dotenv(settings).get(variable) or ""


def plugin_secrets(
    schemes: Iterable[str], settings: BaseSettings, environ: Mapping[str, str]
) -> list[str]:
    """The webhook secrets of the third-party providers named in ``schemes`` (the mail
    backends in use), for the redaction to mask. A built-in's secret is a setting, masked from
    there, so built-in providers are not loaded (their parsers are heavy for a sender
    process). A plugin that can't be loaded or names something else is skipped: it serves no
    endpoint, and ``doctor`` reports it."""
    found: list[str] = []
    for name in dict.fromkeys(schemes):
        ep = _registered().get(name)
        if ep is None or ep.value.startswith("newsletter."):
            continue
        try:
            hook = provider(name)
        except Exception:  # a broken plugin: no endpoint, nothing of it to read
            continue
        if hook is not None and (secret := secret_for(hook, settings, environ)):
            found.append(secret)
    return found


def _dotenv(settings: BaseSettings) -> dict[str, str | None]:
    """The settings' ``.env`` file, read as the settings read it (a plugin's secret may live
    there beside the built-ins'); empty when there is none."""
    env_file = settings.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own reader; only when a file exists

    return dotenv_values(env_file, encoding=settings.model_config.get("env_file_encoding"))
