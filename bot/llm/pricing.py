"""What a call costs, from the usage the provider reported.

The built-in prices are public list prices in USD per million tokens, copied by hand: check them against the
providers' pricing pages before relying on them, and override them in config when they differ (batch or
negotiated prices, new models). A model that is in neither table has no price: its cost is unknown and shown
as such, never guessed. Local servers (provider "openai" with a base_url) cost nothing unless the operator
sets a price: the caller decides that with ``FREE``, since only it knows where the provider points.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.llm.base import Usage


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A cache price left as None is billed like ``input`` (an override that names
    only input and output stays usable; the built-in entries set all four)."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * cache_read
            + usage.cache_write_tokens * cache_write
        ) / 1_000_000


FREE = Price(0.0, 0.0, 0.0, 0.0)

# List prices as published in November 2026, to be checked (see the module docstring). Anthropic: cache write
# is the 5-minute ephemeral rate (1.25 × input), cache read 0.1 × input. OpenAI: cached input tokens are
# discounted automatically and there is no cache-write charge, so cache_write equals the input price.
BUILTIN_PRICES: dict[str, dict[str, Price]] = {
    "anthropic": {
        "claude-sonnet-5-5": Price(2.00, 10.00, cache_read=0.20, cache_write=2.50),
        "claude-sonnet-5": Price(2.00, 10.00, cache_read=0.20, cache_write=2.50),
        "claude-sonnet-4-6": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),
        "claude-sonnet-4-5": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),  # end of life 2026-11-30
        "claude-haiku-4-5": Price(1.00, 5.00, cache_read=0.10, cache_write=1.25),
        "claude-opus-5": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
        "claude-opus-4-5": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    },
    "openai": {
        "gpt-4o": Price(2.50, 10.00, cache_read=1.25, cache_write=2.50),
        "gpt-4o-mini": Price(0.15, 0.60, cache_read=0.075, cache_write=0.15),
        "gpt-4.1": Price(2.00, 8.00, cache_read=0.50, cache_write=2.00),
        "gpt-4.1-mini": Price(0.40, 1.60, cache_read=0.10, cache_write=0.40),
    },
}

# Only a date (claude-sonnet-4-5-20250929, gpt-4o-2024-08-06) may follow a known name. A looser prefix
# would price gpt-4o-audio-preview or gpt-4o-realtime as gpt-4o, which is exactly the invented cost we avoid.
_DATED_NAME = re.compile(r"(?P<name>.+)-(\d{8}|\d{4}-\d{2}-\d{2})")


def price_for(provider: str, model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``, or None when it is unknown.

    Order: an override for the exact name, the built-in table for the exact name, then the same two for the
    name without its date suffix (so an override of "claude-sonnet-4-5" also prices its dated snapshots).
    """
    builtin = BUILTIN_PRICES.get(provider, {})
    overrides = overrides or {}
    for table in (overrides, builtin):
        if model in table:
            return table[model]
    undated = _undated(model)
    if undated is not None:
        for table in (overrides, builtin):
            if undated in table:
                return table[undated]
    return None


def _undated(model: str) -> str | None:
    match = _DATED_NAME.fullmatch(model)
    return match["name"] if match else None
