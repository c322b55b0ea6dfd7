"""DMService: the one place that orders the guards and runs a DM turn. It knows nothing of Discord.

For every LLM turn, in this order:
  1. the input is checked (length, emptiness) — nothing else happens for bad input;
  2. the channel must have an active session (or, for /start, must not);
  3. the channel's queue must have room (``max_queued_turns``) — a flood of actions is refused, not queued;
  4. the rate limit counts the turn (a refusal says when to try again);
  5. the channel's lock is taken: turns in one channel run one after another, each seeing the ones before;
  6. the token budget is checked with an estimate of this request (after the lock, so it sees the turn that
     just finished);
  7. the player's action is stored as pending, the model streams with retries (``RetryPolicy``) and tool
     rounds (the DM's own dice), and the outcome is stored in one transaction with the reported usage.
Refusals in 1–6 make no LLM call. Each public turn method is an async generator of ``bot.dm.events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace

from bot.config import Config
from bot.dm import dice
from bot.dm.events import DMEvent, Done, Failed, Reset, Retrying, RollMade, TextDelta, UsageReport
from bot.dm.guards import ChannelRateLimiter, RetryPolicy, TokenBudget, estimate_tokens
from bot.dm.memory import CampaignMemory
from bot.dm.prompts import ROLL_DICE, system_prompt
from bot.llm.base import (
    Finish,
    LLMProvider,
    LLMRequest,
    Message,
    ProviderError,
    TextChunk,
    ToolCall,
    ToolResult,
    Usage,
)
from bot.llm.pricing import Price, price_for
from bot.store.base import CallRecord, Channel, Player, RollRecord, Session, SessionExists, Store, Turn, UsageTotals

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 4  # LLM calls in one turn; a model that keeps calling tools is cut off here
MIN_BUDGET, MAX_BUDGET = 1_000, 100_000_000  # what /budget accepts
MAX_KEPT_TOTAL = 2**63 - 1  # every roll is stored, and stores keep 64-bit integers


def _keepable(result: dice.RollResult) -> dice.RollResult:
    """Honest dice means every roll is kept; a total past 64 bits ("9223372036854775808") cannot be."""
    if not -MAX_KEPT_TOTAL <= result.total <= MAX_KEPT_TOTAL:
        raise dice.DiceError("That roll's result is too large to keep.")
    return result


class _Refused(Exception):
    def __init__(self, failure: Failed) -> None:
        self.failure = failure


@dataclass(frozen=True, slots=True)
class BudgetView:
    session: Session
    totals: UsageTotals
    limit: int
    turns: int

    @property
    def used(self) -> int:
        return self.totals.usage.total

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class PlayerRoll:
    result: dice.RollResult
    in_session: bool  # stored as a turn: the DM sees it next time


@dataclass(slots=True)
class _Round:
    """What one LLM call produced (reset before each attempt)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str = "other"


class DMService:
    def __init__(
        self,
        config: Config,
        store: Store,
        provider: LLMProvider,
        *,
        rate_limiter: ChannelRateLimiter | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.provider = provider
        self.rate_limiter = rate_limiter or ChannelRateLimiter(
            config.limits.requests_per_minute, config.limits.backend
        )
        self.retry = retry or RetryPolicy(config.retry)
        self.budget = TokenBudget(config.limits.tokens_per_session)
        self.system = system_prompt(config.dm, tools=config.dm.dm_rolls)
        self.tools = (ROLL_DICE,) if config.dm.dm_rolls else ()
        self.price: Price | None = price_for(config.llm.provider, config.llm.model, config.prices)
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, int] = {}
        # Campaign memory (bot/dm/memory): what each request holds, the running summary, pins, /recap.
        self.memory = CampaignMemory(config, store, provider, self.retry, self.budget,
                                     system=self.system, tools=self.tools)

    async def aclose(self) -> None:
        """Stop background work (summaries being written) before the store and provider close."""
        await self.memory.aclose()

    # -- public faces' calls --------------------------------------------------------------------------------

    async def start(self, channel: Channel, starter: Player, premise: str) -> AsyncIterator[DMEvent]:
        """Open a session in the channel and stream the opening narration."""
        try:
            premise = self._checked_text(premise, self.config.dm.max_premise_chars, "premise", allow_empty=True)
            existing = await self.store.active_session(channel.channel_id)
            if existing:
                raise _Refused(self._session_active(existing))
            async with self._turn_slot(channel.channel_id):
                try:
                    session = await self.store.start_session(channel, starter, premise)
                except SessionExists:
                    raise _Refused(self._session_active(await self.store.active_session(channel.channel_id)))
                async with aclosing(self._run_turn(session, None, [])) as events:
                    async for event in events:
                        if isinstance(event, Failed):
                            # No opening, no adventure: close it (it stays in the database) so /start can be retried.
                            await self.store.end_session(session.id, starter)
                            event = Failed(event.kind, f"{event.message} The adventure was not started; /start "
                                                       "again when you are ready.", event.retry_after)
                        yield event
        except _Refused as refused:
            yield refused.failure

    async def act(self, channel: Channel, player: Player, text: str) -> AsyncIterator[DMEvent]:
        """A player's action; streams the DM's answer."""
        try:
            text = self._checked_text(text, self.config.dm.max_action_chars, "action")
            if not await self.store.active_session(channel.channel_id):
                raise _Refused(self._no_session())
            async with self._turn_slot(channel.channel_id):
                session = await self.store.active_session(channel.channel_id)  # it may have ended meanwhile
                if session is None:
                    raise _Refused(self._no_session())
                pending = Turn(0, session.id, 0, "player", player, text, "pending", time.time())
                async with aclosing(self._run_turn(session, player, [pending])) as events:
                    async for event in events:
                        yield event
        except _Refused as refused:
            yield refused.failure

    async def roll(
        self, channel: Channel, player: Player, notation: str, *, advantage: str | None = None,
        reason: str | None = None,
    ) -> PlayerRoll:
        """A player's own roll. Raises ``dice.DiceError`` (a user-facing message) for bad notation."""
        result = _keepable(dice.roll(notation, advantage=advantage, reason=reason))
        session = await self.store.active_session(channel.channel_id)
        await self.store.add_roll(channel, session.id if session else None, self._roll_record(player, result))
        return PlayerRoll(result, session is not None)

    async def usage(self, channel: Channel) -> BudgetView | None:
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return None
        totals = await self.store.usage_totals(session.id)
        turns = await self.store.count_turns(session.id)
        return BudgetView(session, totals, self.budget.limit_for(session.token_limit), turns)

    async def set_budget(self, channel: Channel, tokens: int, *, can_manage_server: bool) -> tuple[bool, str]:
        """An admin's token budget for the channel's current session (Manage Server only)."""
        if not can_manage_server:
            return False, "Only members with the Manage Server permission can change the budget."
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return False, "There is no adventure running in this channel; the budget applies to one adventure."
        if not MIN_BUDGET <= tokens <= MAX_BUDGET:
            return False, f"The budget must be between {MIN_BUDGET:,} and {MAX_BUDGET:,} tokens."
        await self.store.set_token_limit(session.id, tokens)
        used = (await self.store.usage_totals(session.id)).usage.total
        return True, (f"This adventure's budget is now {tokens:,} tokens ({used:,} used, "
                      f"{max(0, tokens - used):,} left).")

    async def end(self, channel: Channel, by: Player, *, can_manage: bool) -> tuple[bool, str]:
        """Close the channel's session. Only its starter, or someone who may manage the channel, may."""
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return False, "There is no adventure running in this channel."
        if by.id != session.started_by.id and not can_manage:
            return False, (f"Only {session.started_by.name}, who started this adventure, or someone with the "
                           "Manage Channels permission can end it.")
        await self.store.end_session(session.id, by)
        totals = await self.store.usage_totals(session.id)
        turns = await self.store.count_turns(session.id)
        return True, (f"The adventure is over. {turns} turns were played, using {totals.usage.total:,} tokens. "
                      "Thanks for playing! /start opens a new one.")

    # -- guards ---------------------------------------------------------------------------------------------

    @staticmethod
    def _checked_text(text: str | None, limit: int, what: str, *, allow_empty: bool = False) -> str:
        text = (text or "").strip()
        if not text and not allow_empty:
            raise _Refused(Failed("invalid", f"Tell the DM what you do: the {what} is empty."))
        if len(text) > limit:
            raise _Refused(Failed("invalid", f"Your {what} is too long ({len(text):,} characters; the limit is "
                                             f"{limit:,}). Shorten it and try again."))
        return text

    @staticmethod
    def _no_session() -> Failed:
        return Failed("no_session", "There is no adventure running in this channel. Start one with /start.")

    @staticmethod
    def _session_active(session: Session | None) -> Failed:
        who = f" (started by {session.started_by.name})" if session else ""
        return Failed("session_active", f"An adventure is already running in this channel{who}. "
                                        "Play with /act, or close it with /end first.")

    @asynccontextmanager
    async def _turn_slot(self, channel_id: str) -> AsyncIterator[None]:
        """Queue room, rate limit, then the channel's lock (steps 3–5 of the module docstring)."""
        queued = self._queued.get(channel_id, 0)
        if queued >= self.config.limits.max_queued_turns:
            raise _Refused(Failed("busy", f"The DM is still answering {queued} earlier actions in this channel. "
                                          "Try again in a moment."))
        wait = await self.rate_limiter.acquire(channel_id)
        if wait is not None:
            per_minute = self.config.limits.requests_per_minute
            raise _Refused(Failed("rate_limited", f"This channel has reached its limit of {per_minute} DM turns "
                                                  f"a minute. Try again in {wait:.0f} s.", retry_after=wait))
        self._queued[channel_id] = queued + 1
        lock = self._locks.setdefault(channel_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._queued[channel_id] -= 1
            if not self._queued[channel_id]:  # idle channels keep no state in memory
                del self._queued[channel_id]
                self._locks.pop(channel_id, None)

    # -- the turn -------------------------------------------------------------------------------------------

    async def _request(self, session: Session, extra: list[Turn]) -> LLMRequest:
        """Every decision about what the model sees is the memory's (``volatile=`` takes per-turn state)."""
        return await self.memory.request(session, extra)

    async def _run_turn(self, session: Session, player: Player | None, extra: list[Turn]) -> AsyncIterator[DMEvent]:
        request = await self._request(session, extra)
        base, shrunk = len(request.messages), False  # messages after ``base`` are this turn's tool rounds
        used = (await self.store.usage_totals(session.id)).usage.total
        limit = self.budget.limit_for(session.token_limit)
        refusal = self.budget.refusal(used, estimate_tokens(request) + request.max_tokens, limit)
        if refusal:
            yield Failed("budget", refusal)
            return
        player_turn = await self.store.begin_turn(session.id, player, extra[0].content) if player else None
        calls: list[CallRecord] = []
        rolls: list[RollRecord] = []
        narration: list[str] = []
        try:
            for round_no in range(1, MAX_TOOL_ROUNDS + 1):
                result = _Round()
                for _fitting in range(2):
                    try:
                        async with aclosing(self._call(request, result, calls)) as events:
                            async for event in events:
                                yield event
                        break
                    except ProviderError as error:
                        if error.kind != "context_overflow" or shrunk:
                            raise
                        shrunk = True  # "prompt is too long": once per turn, the same turn in a shorter request
                        smaller = await self.memory.shrunk(session, extra, request)
                        request = replace(smaller, messages=smaller.messages + request.messages[base:])
                        base = len(smaller.messages)
                narration.append(result.text)
                if not result.tool_calls or round_no == MAX_TOOL_ROUNDS:
                    break
                tool_results = []
                for call in result.tool_calls:
                    made, answer = self._dm_roll(call)
                    if made:
                        rolls.append(made[0])
                        yield RollMade(made[1], made[0].roller.name)
                    tool_results.append(answer)
                request = replace(request, messages=(
                    *request.messages, Message("assistant", result.text, tool_calls=tuple(result.tool_calls)),
                    Message("user", tool_results=tuple(tool_results))))
        except ProviderError as error:
            await self.store.fail_turn(session.id, player_turn, calls)
            yield self._provider_failure(error)
            return
        except Exception:
            log.exception("DM turn failed in channel %s", session.channel_id)
            await self.store.fail_turn(session.id, player_turn, calls)
            yield Failed("internal", "Something went wrong on our side; it has been logged. Try again.")
            return
        except (asyncio.CancelledError, GeneratorExit):
            # The face went away mid-turn (shutdown, or it stopped listening): keep the action, charge what was
            # reported, and never store half an answer. Shielded: this write must not be cancelled in turn.
            await asyncio.shield(self.store.fail_turn(session.id, player_turn, calls, interrupted=True))
            raise
        await self.store.complete_turn(session.id, player_turn, "".join(narration).strip(), calls, rolls)
        self.memory.after_turn(session)  # the running summary, in the background (never delays the turn)
        yield Done(result.finish)

    async def _call(self, request: LLMRequest, result: _Round, calls: list[CallRecord]) -> AsyncIterator[DMEvent]:
        """One LLM call with retries. Every attempt's reported usage is charged, failed attempts included."""
        async for attempt in self.retry.retrying():
            with attempt:
                if result.text:
                    yield Reset()  # the attempt before showed text; the new one starts over
                result.text, result.tool_calls, result.finish = "", [], "other"
                usage: Usage | None = None
                try:
                    async with aclosing(self.provider.stream(request)) as items:  # closed even if we stop early
                        async for item in items:
                            if isinstance(item, TextChunk):
                                result.text += item.text
                                yield TextDelta(item.text)
                            elif isinstance(item, ToolCall):
                                result.tool_calls.append(item)
                            elif isinstance(item, Usage):
                                usage = item
                            elif isinstance(item, Finish):
                                result.finish = item.reason
                except ProviderError as error:
                    number = attempt.retry_state.attempt_number
                    if self.retry.will_retry(error, number):
                        yield Retrying(number + 1, self.retry.config.attempts, error.message)
                    raise
                finally:
                    if usage is not None:
                        calls.append(self._call_record(usage))
                if usage is not None:
                    yield UsageReport(usage, calls[-1].cost_usd or 0.0)

    def _dm_roll(self, call: ToolCall) -> tuple[tuple[RollRecord, dice.RollResult] | None, ToolResult]:
        if call.name != ROLL_DICE.name:
            return None, ToolResult(call.id, f"There is no tool named {call.name!r}; only roll_dice.", is_error=True)
        args = call.arguments
        if call.malformed or not isinstance(args.get("notation"), str):
            return None, ToolResult(call.id, "roll_dice needs a 'notation' string, e.g. 1d20+3.", is_error=True)
        for_whom = str(args.get("for_whom") or "the DM")[:60]
        try:
            result = _keepable(dice.roll(args["notation"], reason=str(args.get("reason") or "") or None))
        except dice.DiceError as error:
            return None, ToolResult(call.id, f"Could not roll: {error}", is_error=True)
        record = self._roll_record(Player("dm", f"The DM, for {for_whom}"), result, by_dm=True)
        return (record, result), ToolResult(call.id, record.summary)

    @staticmethod
    def _roll_record(roller: Player, result: dice.RollResult, *, by_dm: bool = False) -> RollRecord:
        return RollRecord(roller, result.expression, result.total, result.detail, result.reason,
                          result.summary(roller.name), by_dm)

    def _call_record(self, usage: Usage) -> CallRecord:
        cost = self.price.cost(usage) if self.price else None
        return CallRecord(self.provider.name, self.provider.model, usage, cost)

    def _provider_failure(self, error: ProviderError) -> Failed:
        if self.retry.asks_too_long(error):
            return Failed("retry_later", f"The AI provider is busy and asks us to wait {error.retry_after:.0f} s. "
                                         f"Try again in {error.retry_after:.0f} s.", retry_after=error.retry_after)
        if error.retryable:
            return Failed("unavailable", f"The AI provider is not answering right now ({error.message}). "
                                         "Try again in a minute.")
        return Failed("rejected", f"The AI provider refused the request ({error.message}). "
                                  "If this keeps happening, tell the bot's admin.")
