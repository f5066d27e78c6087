"""Pure: an estimate, in US dollars, of what a writer call cost, from its usage.

List prices per million tokens as published by Anthropic for the models named here
(input, output, cache write, cache read; a cache write costs 1.25x input, a read 0.1x). They
change; the figure is labelled an estimate wherever it is shown, and a model not listed has
no estimate rather than a wrong one. Hugging Face Inference Providers bill the provider's own
price per token, which differs by provider and model, so no estimate is made for them.
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


def estimate(model: str, usage: Usage) -> float | None:
    """Dollars for one call, or None when the model's price is not known here."""
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
