"""Pure: an estimate, in US dollars, of what a writer call cost, from its usage.

List prices per million tokens as published by Anthropic for the models named here
(input, output, cache write, cache read; a cache write costs 1.25x input, a read 0.1x). They
change; the figure is labelled an estimate wherever it is shown, and a model not listed has
no estimate rather than a wrong one.

Hugging Face Inference Providers pass each provider's own price per token through (no
markup), so the price depends on the provider that answered: :data:`PROVIDER_PRICES` lists
the providers' published prices for the default model; another model or provider has no
estimate.
"""

from __future__ import annotations

from newsletter.writers.contract import Usage

#: (input, output, cache write, cache read) US dollars per million tokens.
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-0": (3.0, 15.0, 3.75, 0.30),
    "claude-opus-4-1": (15.0, 75.0, 18.75, 1.50),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku-latest": (0.80, 4.0, 1.0, 0.08),
}


#: (provider, model): (input, output) US dollars per million tokens, as the providers publish
#: them for Llama 3.3 70B (no prompt caching on these routes).
PROVIDER_PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("groq", "meta-llama/Llama-3.3-70B-Instruct"): (0.59, 0.79),
    ("together", "meta-llama/Llama-3.3-70B-Instruct"): (0.88, 0.88),
    ("fireworks-ai", "meta-llama/Llama-3.3-70B-Instruct"): (0.90, 0.90),
}


def estimate(model: str, usage: Usage, provider: str | None = None) -> float | None:
    """Dollars for one call, or None when the price of the model (on that provider, for
    Hugging Face) is not known here."""
    if provider is not None:
        per = PROVIDER_PRICES.get((provider, model))
        if per is None:
            return None
        return (usage.input_tokens * per[0] + usage.output_tokens * per[1]) / 1_000_000
    price = PRICES.get(model)
    if price is None:
        return None
    parts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_tokens,
        usage.cache_read_tokens,
    )
    return sum(n * p for n, p in zip(parts, price, strict=True)) / 1_000_000
