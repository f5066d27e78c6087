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

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path

from pydantic_settings import BaseSettings

from newsletter.webhooks.base import WebhookProvider

ENTRY_POINT_GROUP = "newsletter.webhooks"
_SETTINGS_PREFIX = "NEWSLETTER_"

__all__ = ["ENTRY_POINT_GROUP", "names", "provider", "providers", "secret_for"]


def names() -> list[str]:
    """Every registered provider name, without loading any."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def provider(name: str) -> WebhookProvider | None:
    """The provider registered as ``name`` (only its module is imported), or None when none
    is; an entry point that names something else is refused, not served."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            found = ep.load()
            if not isinstance(found, WebhookProvider) or found.name != name:
                raise TypeError(
                    f"entry point {name} in {ENTRY_POINT_GROUP} must name a WebhookProvider "
                    f"called {name!r}"
                )
            return found
    return None


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


def _dotenv(settings: BaseSettings) -> dict[str, str | None]:
    """The settings' ``.env`` file, read as the settings read it (a plugin's secret may live
    there beside the built-ins'); empty when there is none."""
    env_file = settings.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own reader; only when a file exists

    return dotenv_values(env_file, encoding=settings.model_config.get("env_file_encoding"))
