"""The guards on their own: the per-channel moving-window rate limit (in memory and on Redis), the budget
message, the request estimate, and the stepped history window that keeps prompt caching working."""

from __future__ import annotations

import pytest

from bot.dm.guards import ChannelRateLimiter, TokenBudget, estimate_tokens
from bot.dm.history import sliding_window_start, window_start
from bot.llm.base import LLMRequest, Message
from tests.services import REDIS_URL, require, unique

async def check_limiter(limiter: ChannelRateLimiter, channel: str) -> None:
    assert await limiter.acquire(channel) is None
    assert await limiter.acquire(channel) is None
    wait = await limiter.acquire(channel)
    assert wait is not None and 1.0 <= wait <= 60.0
    assert await limiter.acquire(channel + "-other") is None  # each channel has its own window


async def test_rate_limit_in_memory():
    await check_limiter(ChannelRateLimiter(2, "memory://"), "c1")


async def test_rate_limit_shared_through_redis():
    require("redis")
    prefix, channel = unique("dmtest"), "800000000000000010"
    first = ChannelRateLimiter(2, REDIS_URL, key_prefix=prefix)
    second = ChannelRateLimiter(2, REDIS_URL, key_prefix=prefix)
    assert await first.acquire(channel) is None
    assert await second.acquire(channel) is None  # another process sees the same count
    assert await first.acquire(channel) is not None
    assert await ChannelRateLimiter(2, REDIS_URL, key_prefix=unique("dmtest")).acquire(channel) is None, \
        "another prefix (another bot sharing the Redis) has its own windows"


async def test_redis_windows_survive_a_restart_and_turns_and_rolls_count_apart():
    require("redis")
    prefix, channel = unique("dmtest"), "800000000000000010"
    before = ChannelRateLimiter(2, REDIS_URL, key_prefix=prefix)
    assert await before.acquire(channel) is None and await before.acquire(channel) is None
    del before
    after = ChannelRateLimiter(2, REDIS_URL, key_prefix=prefix)  # a new process: nothing in memory
    wait = await after.acquire(channel)
    assert wait is not None and 1.0 <= wait <= 60.0
    rolls = ChannelRateLimiter(2, REDIS_URL, key_prefix=prefix, namespace="player-roll")
    assert await rolls.acquire(channel) is None, "a channel's rolls have their own window"


async def test_unreachable_redis_falls_back_to_this_process(caplog: pytest.LogCaptureFixture):
    limiter = ChannelRateLimiter(2, "redis://127.0.0.1:9", key_prefix=unique("dmtest"))  # port 9: nothing there
    assert await limiter.acquire("c") is None
    assert await limiter.acquire("c") is None
    assert await limiter.acquire("c") is not None, "the limit still holds, counted in this process"
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per turn"


def test_budget_messages_say_used_and_limit():
    budget = TokenBudget(10_000)
    assert budget.limit_for(None) == 10_000 and budget.limit_for(500) == 500
    assert budget.refusal(1_000, 2_000, 10_000) is None
    assert "used 9,000 of its 10,000 tokens" in budget.refusal(9_000, 2_000, 10_000)
    assert "whole budget: 10,000 of 10,000" in budget.refusal(10_000, 1, 10_000)


def test_estimate_grows_with_the_request():
    small = LLMRequest("system", (Message("user", "hi"),), 100)
    big = LLMRequest("system", (Message("user", "hi " * 1000),), 100)
    assert 0 < estimate_tokens(small) < estimate_tokens(big)
    assert estimate_tokens(big) >= 3000 // 4


def test_the_window_moves_in_steps_and_keeps_its_prefix():
    size = 20
    starts = [window_start(total, size) for total in range(0, 61)]
    assert starts[:21] == [0] * 21
    for total, start in enumerate(starts):
        assert size // 2 < total - start <= size or total <= size
        assert start % (size // 2) == 0
    # between two steps the first turn sent stays the same (a cache hit); the naive window moves every turn
    assert len(set(starts[21:31])) == 1
    assert len({sliding_window_start(t, size) for t in range(21, 31)}) == 10
