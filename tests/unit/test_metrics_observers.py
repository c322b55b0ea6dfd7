"""The metrics observers alone: the provider wrapper's outcomes and tokens, and the turn observer's counts."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from bot.dm.events import Done, Failed, Retrying, TextDelta
from bot.llm.base import LLMRequest, ProviderError, TextChunk, Usage
from bot.metrics import BotMetrics
from tests.fakes import ScriptedProvider, overloaded, reply

REQUEST = LLMRequest(system="s", messages=(), max_tokens=100, temperature=None, tools=())


def value(metrics: BotMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def drain(stream) -> None:
    async for _ in stream:
        pass


async def test_provider_calls_are_counted_by_outcome_with_their_tokens():
    metrics = BotMetrics()
    provider = metrics.observe_provider(ScriptedProvider(
        reply("one", input_tokens=10, output_tokens=5),
        [Usage(7, cache_read_tokens=3), TextChunk("half"), Usage(7, 2, 3), overloaded()],
        reply("three", input_tokens=1, output_tokens=1)))
    assert provider.name == "fake" and provider.model == "fake-model"
    await drain(provider.stream(REQUEST))
    with pytest.raises(ProviderError):
        await drain(provider.stream(REQUEST))
    async with aclosing(provider.stream(REQUEST)) as items:  # the caller stops after the first item
        async for _ in items:
            break
    assert value(metrics, "dm_llm_calls_total", provider="fake", outcome="ok") == 1
    assert value(metrics, "dm_llm_calls_total", provider="fake", outcome="overloaded") == 1
    assert value(metrics, "dm_llm_calls_total", provider="fake", outcome="cancelled") == 1
    # the last (cumulative) usage of each call, the failed one included; the cut one reported input only
    assert value(metrics, "dm_llm_tokens_total", kind="input") == 10 + 7 + 1
    assert value(metrics, "dm_llm_tokens_total", kind="output") == 5 + 2
    assert value(metrics, "dm_llm_tokens_total", kind="cache_read") == 3


async def _events(*events):
    for event in events:
        yield event


async def test_turns_are_counted_and_only_real_turns_are_timed():
    metrics = BotMetrics()
    await drain(metrics.observe_turn(_events(Retrying(2, 3, "busy"), TextDelta("a"), Done("stop"))))
    await drain(metrics.observe_turn(_events(Failed("busy", "wait"))))
    await drain(metrics.observe_turn(_events(Failed("unavailable", "down"))))
    async with aclosing(metrics.observe_turn(_events(TextDelta("a"), TextDelta("b")))) as stream:
        async for _ in stream:
            break  # the face stopped listening
    assert [value(metrics, "dm_turns_total", outcome=o) for o in ("done", "busy", "unavailable", "interrupted")] \
        == [1, 1, 1, 1]
    assert value(metrics, "dm_llm_retries_total") == 1
    assert value(metrics, "dm_turn_seconds_count") == 3  # not the refusal
    assert value(metrics, "dm_turn_first_text_seconds_count") == 2
