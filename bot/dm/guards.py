"""The guards in front of the LLM: per-channel rate limit, token budgets (adventure, player/day, server/month),
and the retry policy.

``DMService`` decides the order in which they apply; each guard here only answers its own question.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.aio.strategies import MovingWindowRateLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from bot.config import LimitsConfig, RetryConfig
from bot.llm.base import LLMRequest, ProviderError
from bot.store.base import CallRecord, CapReached, Player, Reservation, Session, Store, TokenCap

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


class ChannelRateLimiter:
    """``per_minute`` hits per key (a channel's LLM turns; a player's rolls in a channel: ``namespace`` tells the
    windows apart), over a moving window.

    On Redis (``redis://…``, when several bot processes must share the counts) the ``limits`` library keeps the
    windows, under ``key_prefix``: every process sees one window per channel, and a restart keeps them. In one
    process (``memory://``) they are kept here (``_LocalWindows``): limits' async memory storage follows every
    hit with a pass over *every* channel's window, one thread-pool hop per channel, so with a few hundred active
    channels that pass never stops and costs more CPU than the turns themselves (bench/).

    If Redis cannot be reached, the windows fall back to this process's own (logged once per outage) rather
    than refusing every turn: the limit still holds per process, and the shared windows return with Redis.
    """

    def __init__(self, per_minute: int, backend: str = "memory://", namespace: str = "dm-turn", *,
                 key_prefix: str = "dungeon-master") -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.namespace = namespace
        self.local: _LocalWindows | None = None
        self.limiter: MovingWindowRateLimiter | None = None
        self.redis_down = False
        if backend.startswith(("redis://", "rediss://")):
            # redis-py's asyncio client (the `redis` package) rather than limits' default, coredis.
            # Short socket timeouts: a lost Redis must cost a turn a second or two, not a hung command.
            storage = storage_from_string(f"async+{backend}", implementation="redispy", key_prefix=key_prefix,
                                          wrap_exceptions=True, socket_connect_timeout=2, socket_timeout=2)
            self.limiter = MovingWindowRateLimiter(storage)
            self._fallback = _LocalWindows(self.item.amount, self.item.get_expiry())
        else:
            self.local = _LocalWindows(self.item.amount, self.item.get_expiry())

    async def acquire(self, key: str) -> float | None:
        """Count one hit. Returns None if allowed, else how many seconds until one is allowed again."""
        if self.local is not None:
            return self.local.hit(key)
        assert self.limiter is not None
        try:
            if await self.limiter.hit(self.item, self.namespace, key):
                allowed = None
            else:
                stats = await self.limiter.get_window_stats(self.item, self.namespace, key)
                allowed = max(1.0, stats.reset_time - time.time())
        except StorageError as error:
            if not self.redis_down:
                log.warning("rate limits: Redis is unreachable (%s); counting in this process until it is back",
                            error)
            self.redis_down = True
            return self._fallback.hit(key)
        if self.redis_down:
            log.info("rate limits: Redis is back; windows are shared again")
            self.redis_down = False
        return allowed


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


@dataclass(frozen=True, slots=True)
class CapLimits:
    """The token caps in force for one server: 0 = no cap (still counted, so a cap set later sees the spend)."""

    daily_per_player: int = 0
    monthly_per_server: int = 0


@dataclass(slots=True)
class TurnHold:
    """One turn's tokens held in the store, against the caps worked out when it began (a turn that runs past
    midnight stays on its first day), grown before each further tool round, settled when the turn ends."""

    session_id: int
    caps: list[TokenCap]
    reservation: Reservation


def day_and_month(now: float) -> tuple[str, float, str, float]:
    """The UTC day and month of ``now`` as counter periods, each with the UNIX time it ends."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(
        month=month.month + 1)
    return (day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).timestamp(), month.strftime("%Y-%m"),
            next_month.timestamp())


class TokenBudget:
    """Tokens an adventure, a player's UTC day and a server's UTC month may use: everything the provider reports
    (input, cache reads and writes, output).

    Before a turn its estimate is *held* against every cap in one store transaction that also checks them
    (``Store.reserve_tokens``), so several processes can never together pass a cap by more than one call's
    overshoot of its estimate; after the turn the hold is settled with the reported usage.

    The per-server caps come through one coroutine, ``limits_for(guild_id)``: the configured defaults unless a
    caller (an admin's per-server settings) passes its own.
    """

    def __init__(
        self,
        default_limit: int,
        *,
        daily_per_player: int = 0,
        monthly_per_server: int = 0,
        limits_for: Callable[[str | None], Awaitable[CapLimits]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_limit = default_limit
        self.configured = CapLimits(daily_per_player, monthly_per_server)
        self.limits_for = limits_for or self._configured_limits
        self.clock = clock

    @classmethod
    def from_config(cls, limits: LimitsConfig, **options: Any) -> TokenBudget:
        return cls(limits.tokens_per_session, daily_per_player=limits.daily_tokens_per_player,
                   monthly_per_server=limits.monthly_tokens_per_server, **options)

    async def _configured_limits(self, guild_id: str | None) -> CapLimits:
        return self.configured

    def limit_for(self, session_limit: int | None) -> int:
        """A session's own limit (set by an admin with /budget) or the configured default."""
        return session_limit if session_limit is not None else self.default_limit

    async def caps(self, session: Session, player: Player | None, now: float) -> list[TokenCap]:
        """The caps a turn in ``session`` by ``player`` is held against (the opening counts for its starter)."""
        limits = await self.limits_for(session.guild_id)
        day, day_ends, month, month_ends = day_and_month(now)
        player = player or session.started_by
        caps = [TokenCap("adventure", self.limit_for(session.token_limit)),
                TokenCap("player_day", limits.daily_per_player, f"player:{player.id}:{day}", day_ends)]
        if session.guild_id:
            caps.append(TokenCap("server_month", limits.monthly_per_server, f"guild:{session.guild_id}:{month}",
                                 month_ends))
        return caps

    async def reserve(self, store: Store, session: Session, player: Player | None, tokens: int) -> TurnHold | str:
        """Hold ``tokens`` for a turn; the refusal message instead when a cap would be passed."""
        now = self.clock()
        caps = await self.caps(session, player, now)
        held = await store.reserve_tokens(session.id, tokens, caps, now=now)
        return self.cap_refusal(held) if isinstance(held, CapReached) else TurnHold(session.id, caps, held)

    async def extend(self, store: Store, hold: TurnHold, calls: Sequence[CallRecord], next_call: int) -> bool:
        """Before a further tool round: grow the hold to what the turn has used plus the next call's estimate.
        False when a cap has no room for it (the turn then ends with what it has), or the store fails."""
        extra = sum(call.usage.total for call in calls) + next_call - hold.reservation.tokens
        if extra <= 0:
            return True
        try:
            grown = await store.reserve_tokens(hold.session_id, extra, hold.caps, now=self.clock(),
                                               adding_to=hold.reservation)
        except Exception:
            log.exception("could not grow token reservation %s", hold.reservation.id)
            return False
        if isinstance(grown, CapReached):
            log.info("no tokens left for another tool round in session %s (%s)", hold.session_id, grown.cap.name)
            return False
        hold.reservation = grown
        return True

    @staticmethod
    async def settle(store: Store, hold: TurnHold, calls: Sequence[CallRecord]) -> None:
        """Charge what the provider reported instead of the hold. Never raises: a hold that cannot be settled now
        is taken as spent in full once stale (bot/store/tokens.py), which errs on the side of the budget."""
        try:
            await store.settle_reservation(hold.reservation, sum(call.usage.total for call in calls))
        except Exception:
            log.exception("could not settle token reservation %s", hold.reservation.id)

    @classmethod
    def cap_refusal(cls, reached: CapReached) -> str:
        cap, used, needed = reached.cap, reached.used, reached.needed
        if cap.name == "adventure":
            return cls.refusal(used, needed, cap.limit) or ""
        when = f"<t:{int(cap.resets_at or 0)}:R>"
        if cap.name == "player_day":
            if used >= cap.limit:
                return (f"You have used your daily allowance of {cap.limit:,} tokens on this bot. "
                        f"It starts again {when}.")
            return (f"You have used {used:,} of your daily allowance of {cap.limit:,} tokens and the next turn may "
                    f"need up to {needed:,}. It starts again {when}.")
        if used >= cap.limit:
            return f"This server has used its monthly allowance of {cap.limit:,} tokens. It starts again {when}."
        return (f"This server has used {used:,} of its monthly allowance of {cap.limit:,} tokens and the next turn "
                f"may need up to {needed:,}. It starts again {when}.")

    @staticmethod
    def refusal(used: int, needed: int, limit: int) -> str | None:
        """None if a turn estimated at ``needed`` tokens fits the adventure's budget, else the message why not."""
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
