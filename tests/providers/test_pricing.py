"""Prices: built-in list prices, overrides, dated model names, and unknown models staying unknown."""

from __future__ import annotations

import pytest

from bot.llm.base import Usage
from bot.llm.pricing import FREE, Price, price_for


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("anthropic", "claude-sonnet-5-5", Price(2.00, 10.00, 0.20, 2.50)),
        ("anthropic", "claude-sonnet-4-5", Price(3.00, 15.00, 0.30, 3.75)),
        ("anthropic", "claude-sonnet-4-5-20250929", Price(3.00, 15.00, 0.30, 3.75)),
        ("anthropic", "claude-haiku-4-5-20251001", Price(1.00, 5.00, 0.10, 1.25)),
        ("anthropic", "claude-opus-4-5", Price(5.00, 25.00, 0.50, 6.25)),
        ("openai", "gpt-4o", Price(2.50, 10.00, 1.25, 2.50)),
        ("openai", "gpt-4o-2024-08-06", Price(2.50, 10.00, 1.25, 2.50)),
        ("openai", "gpt-4o-mini-2024-07-18", Price(0.15, 0.60, 0.075, 0.15)),
        ("openai", "gpt-4.1-mini", Price(0.40, 1.60, 0.10, 0.40)),
        ("openai", "gpt-4.1-2025-04-14", Price(2.00, 8.00, 0.50, 2.00)),
    ],
)
def test_builtin_prices(provider, model, expected):
    assert price_for(provider, model) == expected


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-audio-preview"),  # a different product with a different price: not gpt-4o
        ("openai", "gpt-4o-realtime-preview-2024-12-17"),
        ("openai", "llama3.2"),
        ("anthropic", "claude-sonnet-4-5-turbo"),
        ("anthropic", "gpt-4o"),  # the table is per provider
        ("mistral", "gpt-4o"),
    ],
)
def test_unknown_models_have_no_price(provider, model):
    assert price_for(provider, model) is None


def test_overrides_win_exact_then_for_dated_names():
    mine = Price(1.0, 2.0)
    overrides = {"claude-sonnet-4-5": mine, "llama3.2": FREE}

    assert price_for("anthropic", "claude-sonnet-4-5", overrides) is mine
    assert price_for("anthropic", "claude-sonnet-4-5-20250929", overrides) is mine
    assert price_for("openai", "llama3.2", overrides) is FREE
    # An exact override of a dated name beats everything.
    dated = Price(9.0, 9.0)
    overrides["claude-sonnet-4-5-20250929"] = dated
    assert price_for("anthropic", "claude-sonnet-4-5-20250929", overrides) is dated


def test_cost_of_an_anthropic_call_with_cache():
    usage = Usage(input_tokens=25, output_tokens=19, cache_read_tokens=3400, cache_write_tokens=1200)

    cost = price_for("anthropic", "claude-sonnet-4-5").cost(usage)

    assert cost == pytest.approx((25 * 3.00 + 19 * 15.00 + 3400 * 0.30 + 1200 * 3.75) / 1e6)


def test_cost_of_an_openai_call_with_cached_prompt():
    # 2006 prompt tokens of which 1920 cached, as OpenAIProvider reports them.
    usage = Usage(input_tokens=86, output_tokens=19, cache_read_tokens=1920)

    assert price_for("openai", "gpt-4o").cost(usage) == pytest.approx((86 * 2.50 + 19 * 10.00 + 1920 * 1.25) / 1e6)


def test_override_without_cache_prices_bills_cache_tokens_as_input():
    million = 1_000_000
    usage = Usage(input_tokens=million, output_tokens=million, cache_read_tokens=million, cache_write_tokens=million)

    assert Price(2.0, 6.0).cost(usage) == pytest.approx(2.0 + 6.0 + 2.0 + 2.0)
    assert FREE.cost(usage) == 0.0
