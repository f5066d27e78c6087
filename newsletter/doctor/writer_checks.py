"""Whether the chosen verdict writer can run: its package, its key, its model and providers.
Keys are never printed (only whether one is set); the network is not called (a writer call
costs money), so a wrong key shows on the first draft, as a note on the draft."""

from __future__ import annotations

import importlib.util

from newsletter.config import Settings
from newsletter.doctor.check import Check

#: Providers the Hugging Face router serves chat through (huggingface_hub 2.4).
HF_PROVIDERS = frozenset(
    "baseten cerebras cohere deepinfra featherless-ai fireworks-ai groq hf-inference novita "
    "nscale openai ovhcloud publicai sambanova scaleway together zai-org".split()
)


def check_writer(settings: Settings, _timeout: float) -> list[Check]:
    name = settings.writer
    if name == "rules":
        return [Check("writer", True, "rules (the deterministic verdicts; no key needed)")]
    package = {"claude": "anthropic", "huggingface": "huggingface_hub"}[name]
    if importlib.util.find_spec(package) is None:
        return [
            Check(
                "writer",
                False,
                f"{name}: the {package} package is not installed",
                "pip install '.[ai]' (or set NEWSLETTER_WRITER=rules)",
            )
        ]
    if name == "claude":
        if not settings.anthropic_api_key:
            return [
                Check(
                    "writer",
                    False,
                    "claude: no API key",
                    "Set NEWSLETTER_ANTHROPIC_API_KEY (or NEWSLETTER_WRITER=rules).",
                )
            ]
        return [Check("writer", True, f"claude, model {settings.claude_model}, key set")]
    providers = [p.strip() for p in settings.hf_providers.split(",") if p.strip()]
    unknown = [p for p in providers if p not in HF_PROVIDERS]
    if not settings.hf_token:
        return [
            Check(
                "writer",
                False,
                "huggingface: no token",
                "Set NEWSLETTER_HF_TOKEN (or NEWSLETTER_WRITER=rules).",
            )
        ]
    if not providers or unknown:
        return [
            Check(
                "writer",
                False,
                f"huggingface: unknown provider(s): {', '.join(unknown) or '(none given)'}",
                f"NEWSLETTER_HF_PROVIDERS takes a comma-separated list of: "
                f"{', '.join(sorted(HF_PROVIDERS))}",
            )
        ]
    return [
        Check(
            "writer",
            True,
            f"huggingface, model {settings.hf_model}, providers {' then '.join(providers)}, "
            "token set",
        )
    ]
