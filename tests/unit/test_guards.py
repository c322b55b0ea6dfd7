"""The guards on their own: the per-channel moving-window rate limit (in memory and on Redis), the budget
message, the request estimate, and the stepped history window that keeps prompt caching working."""

from __future__ import annotations

import socket
import uuid

import pytest

from bot.dm.guards import ChannelRateLimiter, TokenBudget, estimate_tokens
from bot.dm.history import sliding_window_start, window_start
from bot.llm.base import LLMRequest, Message

REDIS = ("127.0.0.1", 6379)


def redis_running() -> bool:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
        return True
    except OSError:
        return False


async def check_limiter(limiter: ChannelRateLimiter, channel: str) -> None:
    assert await limiter.acquire(channel) is None
    assert await limiter.acquire(channel) is None
    wait = await limiter.acquire(channel)
    assert wait is not None and 1.0 <= wait <= 60.0
    assert await limiter.acquire(channel + "-other") is None  # each channel has its own window


async def test_rate_limit_in_memory():
    await check_limiter(ChannelRateLimiter(2, "memory://"), "c1")


@pytest.mark.skipif(not redis_running(), reason="Redis is not running on 127.0.0.1:6379 (CI's .ci/run starts it)")
async def test_rate_limit_shared_through_redis():
    channel = f"test-{uuid.uuid4()}"
    first, second = ChannelRateLimiter(2, "redis://127.0.0.1:6379"), ChannelRateLimiter(2, "redis://127.0.0.1:6379")
    assert await first.acquire(channel) is None
    assert await second.acquire(channel) is None  # another process sees the same count
    assert await first.acquire(channel) is not None


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
