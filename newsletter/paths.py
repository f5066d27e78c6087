"""Where the bundled files are: the source tree in a checkout, the wheel's copies when installed.

The wheel carries ``templates/email``, ``examples`` and ``schemas`` under ``newsletter/_*`` (see
``[tool.hatch.build.targets.wheel.force-include]``); an editable install reads the checkout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _first(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"bundled file not found; looked at {', '.join(map(str, candidates))}")


def templates_dir() -> Path:
    return _first(_CHECKOUT / "templates" / "email", _PACKAGE / "_templates" / "email")


def example_comparisons() -> Path:
    return _first(
        _CHECKOUT / "examples" / "comparisons.json", _PACKAGE / "_examples" / "comparisons.json"
    )


def example_subscribers() -> Path:
    return _first(
        _CHECKOUT / "subscribers" / "example.csv", _PACKAGE / "_examples" / "subscribers.csv"
    )


def comparisons_schema() -> Path:
    return _first(
        _CHECKOUT / "schemas" / "comparisons.schema.json",
        _PACKAGE / "_schemas" / "comparisons.schema.json",
    )


def web_templates_dir() -> Path:
    return _first(_CHECKOUT / "templates" / "web", _PACKAGE / "_templates" / "web")
