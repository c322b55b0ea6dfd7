"""The guards in front of the LLM: per-channel rate limit, per-session token budget, and the retry policy.

``DMService`` decides the order in which they apply; each guard here only answers its own question.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.aio.strategies import MovingWindowRateLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from bot.config import RetryConfig
from bot.llm.base import LLMRequest, ProviderError


class ChannelRateLimiter:
    """``requests_per_minute`` LLM turns per channel, over a moving window.

    On Redis (``redis://…``, when several bot processes must share the counts) the ``limits`` library keeps the
    windows. In one process (``memory://``) they are kept here (``_LocalWindows``): limits' async memory storage
    follows every hit with a pass over *every* channel's window, one thread-pool hop per channel, so with a few
    hundred active channels that pass never stops and costs more CPU than the turns themselves (bench/).
    """

    def __init__(self, per_minute: int, backend: str = "memory://") -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.local: _LocalWindows | None = None
        self.limiter: MovingWindowRateLimiter | None = None
        if backend.startswith(("redis://", "rediss://")):
            # redis-py's asyncio client (the `redis` package) rather than limits' default, coredis.
            storage = storage_from_string(f"async+{backend}", implementation="redispy")
            self.limiter = MovingWindowRateLimiter(storage)
        else:
            self.local = _LocalWindows(self.item.amount, self.item.get_expiry())

    async def acquire(self, channel_id: str) -> float | None:
        """Count one turn. Returns None if allowed, else how many seconds until a turn is allowed again."""
        if self.local is not None:
            return self.local.hit(channel_id)
        assert self.limiter is not None
        if await self.limiter.hit(self.item, "dm-turn", channel_id):
            return None
        stats = await self.limiter.get_window_stats(self.item, "dm-turn", channel_id)
        return max(1.0, stats.reset_time - time.time())


class _LocalWindows:
    """Moving windows in this process: the times of each channel's turns in the last ``seconds``, O(1) a hit.
    Channels idle for a whole window are forgotten, in one sweep per window."""

    def __init__(self, amount: int, seconds: float) -> None:
        self.amount, self.seconds = amount, seconds
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = time.monotonic() + seconds

    def hit(self, key: str) -> float | None:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.seconds:
            hits.popleft()
        if len(hits) >= self.amount:
            return max(1.0, hits[0] + self.seconds - now)
        hits.append(now)
        if now >= self._next_sweep:
            self._next_sweep = now + self.seconds
            for idle in [k for k, h in self._hits.items() if h[-1] <= now - self.seconds]:
                del self._hits[idle]
        return None


def estimate_tokens(request: LLMRequest) -> int:
    """A cheap, deliberately generous estimate of a request's input tokens (about 4 characters a token, plus a
    few tokens of framing per message). Only a pre-check: budgets are charged from the provider's own counts."""
    chars = len(request.system) + len(request.volatile)
    for message in request.messages:
        chars += len(message.text) + 16
        chars += sum(len(c.name) + len(str(c.arguments)) for c in message.tool_calls)
        chars += sum(len(r.content) for r in message.tool_results)
    chars += sum(len(t.description) + len(str(t.parameters)) for t in request.tools)
    return chars // 4 + 1


class TokenBudget:
    """Tokens a channel's session may use: everything the provider reports (input, cache reads and writes,
    output). Checked before a turn with an estimate, charged after it with the reported usage."""

    def __init__(self, default_limit: int) -> None:
        self.default_limit = default_limit

    def limit_for(self, session_limit: int | None) -> int:
        """A session's own limit (set by an admin with /budget) or the configured default."""
        return session_limit if session_limit is not None else self.default_limit

    @staticmethod
    def refusal(used: int, needed: int, limit: int) -> str | None:
        """None if a turn estimated at ``needed`` tokens fits, else the message saying why not."""
        if used + needed <= limit:
            return None
        if used >= limit:
            return (f"This adventure has used its whole budget: {used:,} of {limit:,} tokens. "
                    "Ask a server admin to raise it with /budget, or /end it and /start a new one.")
        return (f"This adventure has used {used:,} of its {limit:,} tokens and the next turn may need "
                f"up to {needed:,}. Ask a server admin to raise it with /budget, or /end it and /start a new one.")


class RetryPolicy:
    """The only retry policy of the bot (the SDKs are built with ``max_retries=0``).

    Retries ``ProviderError``s marked retryable, up to ``attempts`` tries, with exponential backoff and jitter
    from ``initial_backoff_seconds`` up to ``max_backoff_seconds``. A ``Retry-After`` from the provider is
    honoured (never retry sooner) when it is at most ``max_retry_after_seconds``; a longer one stops the
    retries at once so the user can be told when to try again.
    """

    def __init__(self, config: RetryConfig, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self.sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=config.initial_backoff_seconds,
            max=config.max_backoff_seconds,
            jitter=config.initial_backoff_seconds,
        )

    @staticmethod
    def _retryable(error: BaseException) -> bool:
        return isinstance(error, ProviderError) and error.retryable

    def will_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether ``retrying()`` tries again after ``error`` ended attempt number ``attempt`` (so the service
        can say so before the wait)."""
        return self._retryable(error) and attempt < self.config.attempts and not self.asks_too_long(error)

    def asks_too_long(self, error: BaseException | None) -> bool:
        retry_after = getattr(error, "retry_after", None)
        return retry_after is not None and retry_after > self.config.max_retry_after_seconds

    def _stop_on_long_retry_after(self, state: RetryCallState) -> bool:
        return state.outcome is not None and self.asks_too_long(state.outcome.exception())

    def _wait(self, state: RetryCallState) -> float:
        backoff = min(self._backoff(state), self.config.max_backoff_seconds)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None) or 0.0
        return max(backoff, retry_after)

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts) | self._stop_on_long_retry_after,
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            sleep=self.sleep,
            reraise=True,
        )
