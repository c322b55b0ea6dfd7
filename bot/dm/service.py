"""DMService: the one place that orders the guards and runs a DM turn. It knows nothing of Discord.

For every LLM turn, in this order:
  1. the input is checked (length, emptiness) — nothing else happens for bad input;
  2. the channel must have an active session (or, for /start, must not);
  3. the channel's queue must have room (``max_queued_turns``) — a flood of actions is refused, not queued;
  4. the rate limit counts the turn (a refusal says when to try again);
  5. the channel's lock is taken: turns in one channel run one after another, each seeing the ones before
     (``bot.dm.slots``; the count is exact across the awaits of 3–5);
  6. the token budget is checked with an estimate of this request (after the lock, so it sees the turn that
     just finished);
  7. the player's action is stored as pending, the model streams with retries (``RetryPolicy``) and tool
     rounds (the DM's own dice), and the outcome is stored in one transaction with the reported usage.
Refusals in 1–6 make no LLM call. Each public turn method is an async generator of ``bot.dm.events``. Step 7,
the turn itself, is ``bot.dm.turn`` (which this class inherits).

What a player saw is kept: the outcome's write is retried, shielded from cancellation and waited for on close
(``aclose``); if it still fails, the action, the shown rolls and every reported usage are kept as an
interrupted turn and the players are told. A call whose usage the provider never reported is charged from the
bot's own estimate (marked so in the ledger).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace

from bot.config import Config
from bot.dm import dice
from bot.dm.admin import ServerAdmin
from bot.dm.batching import MAX_BATCH, ActionBatches
from bot.dm.calls import LLMCalls
from bot.dm.events import AnswersBatch, Batched, DMEvent, Done, Failed
from bot.dm.guards import CapLimits, ChannelRateLimiter, RetryPolicy, TokenBudget
from bot.dm.memory import CampaignMemory
from bot.dm.party import PartyService
from bot.dm.prompts import ROLL_DICE, system_prompt
from bot.dm.recorder import TurnRecorder
from bot.dm.settings import GuildSettings
from bot.dm.slots import SlotRefused, TurnSlots
from bot.dm.tools import RULE_TOOLS, RULES_PROMPT
from bot.dm.turn import TurnRunner, keepable, roll_record
from bot.llm.base import LLMProvider
from bot.llm.pricing import Price, price_for
from bot.store.base import Channel, Player, Session, SessionExists, Store, Turn, UsageTotals

log = logging.getLogger(__name__)

MIN_BUDGET, MAX_BUDGET = 1_000, 100_000_000  # what /budget accepts
STOPPING = "The bot is restarting. Try again in a minute."


class _Refused(Exception):
    def __init__(self, failure: Failed) -> None:
        self.failure = failure


class RollRefused(Exception):
    """A player's /roll was not made (too many rolls, or the bot is stopping); the message is for the player."""


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


class DMService(TurnRunner):
    def __init__(
        self,
        config: Config,
        store: Store,
        provider: LLMProvider,
        *,
        rate_limiter: ChannelRateLimiter | None = None,
        retry: RetryPolicy | None = None,
        write_wait: Callable[[object], float] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.rate_limiter = rate_limiter or ChannelRateLimiter(
            config.limits.requests_per_minute, config.limits.backend, key_prefix=config.limits.key_prefix
        )
        self.roll_limiter = ChannelRateLimiter(config.limits.rolls_per_minute, config.limits.backend, "player-roll",
                                               key_prefix=config.limits.key_prefix)
        self.retry = retry or RetryPolicy(config.retry)
        self.budget = TokenBudget.from_config(config.limits, limits_for=self._cap_limits)
        self.system = system_prompt(config.dm, tools=config.dm.dm_rolls, rules=RULES_PROMPT)
        self.tools = ((ROLL_DICE,) if config.dm.dm_rolls else ()) + RULE_TOOLS
        self.party = PartyService(store)  # the rules engine: characters, HP, conditions, combat
        # per-server settings, /config, /usage
        self.admin = ServerAdmin(config, store, tools=config.dm.dm_rolls, rules=RULES_PROMPT)
        self.price: Price | None = price_for(config.llm.provider, config.llm.model, config.prices)
        self.llm = LLMCalls(provider, self.retry, self.price)
        self.recorder = TurnRecorder(store, write_wait)
        self.slots = TurnSlots(config.limits.max_queued_turns)
        self.batches = ActionBatches()
        self.closing = False  # aclose() began: new commands are refused, writes in flight are waited for
        self._held: dict[str, int] = {}  # channel → session with a roll held for the running turn's end
        # Campaign memory (bot/dm/memory): what each request holds, the running summary, pins, /recap.
        self.memory = CampaignMemory(config, store, lambda: self.llm.provider, self.retry, self.budget,
                                     system=self.system, tools=self.tools)

    @property
    def provider(self) -> LLMProvider:
        return self.llm.provider

    @provider.setter
    def provider(self, provider: LLMProvider) -> None:  # tests and benchmarks swap it
        self.llm.provider = provider

    # -- public faces' calls --------------------------------------------------------------------------------

    async def start(self, channel: Channel, starter: Player, premise: str) -> AsyncIterator[DMEvent]:
        """Open a session in the channel and stream the opening narration."""
        try:
            self._check_open()
            premise = self._checked_text(premise, self.config.dm.max_premise_chars, "premise", allow_empty=True)
            existing = await self.store.active_session(channel.channel_id)
            if existing:
                raise _Refused(self._session_active(existing))
            async with self._turn_slot(channel.channel_id):
                try:
                    session = await self.store.start_session(channel, starter, premise)
                except SessionExists:
                    raise _Refused(self._session_active(await self.store.active_session(channel.channel_id)))
                if (limit := await self.admin.adventure_limit(channel.guild_id)) is not None:
                    await self.store.set_token_limit(session.id, limit)  # the server's adventure_budget
                    session = replace(session, token_limit=limit)
                async with self.store.turn_lock(session.id), aclosing(self._run_turn(session, [])) as events:
                    async for event in events:
                        if isinstance(event, Failed):
                            # No opening, no adventure: close it (it stays in the database) so /start can be retried.
                            await self.recorder.durably(lambda: self.store.end_session(session.id, starter))
                            event = Failed(event.kind, f"{event.message} The adventure was not started; /start "
                                                       "again when you are ready.", event.retry_after)
                        yield event
        except _Refused as refused:
            yield refused.failure

    async def act(self, channel: Channel, player: Player, text: str) -> AsyncIterator[DMEvent]:
        """A player's action; streams the DM's answer. With ``batch_actions``, an action arriving while the DM
        narrates is answered together with the others that arrive meanwhile (``bot.dm.batching``)."""
        cid = channel.channel_id
        batch = None
        leading = False  # this action opened its batch: the batch ends with this stream
        try:
            self._check_open()
            text = self._checked_text(text, self.config.dm.max_action_chars, "action")
            if not (acted_in := await self.store.active_session(cid)):
                raise _Refused(self._no_session())
            if self.config.dm.batch_actions:
                batch = self.batches.joinable(cid)
                if batch is not None:  # a turn waits for the DM: this action goes with it
                    if len(batch.actions) >= MAX_BATCH:
                        raise _Refused(Failed("busy", f"The DM is busy: {MAX_BATCH} actions already wait for the "
                                                      "next answer. Try again in a moment."))
                    yield Batched(batch.ticket, self.batches.join(batch, player, text), text)
                    yield await asyncio.shield(batch.outcome)
                    return
                batch, leading = self.batches.open(cid, player, text), True
                if self.slots.running(cid):
                    yield Batched(batch.ticket, 1, text)  # it will wait: say at once that it is in
            async with self._turn_slot(cid), self.store.turn_lock(acted_in.id):
                if batch is not None:
                    self.batches.close(cid, batch)
                # The adventure may have ended meanwhile. What the request is built from comes in the same read.
                context = await self.store.turn_context(cid, story=self.config.memory.summaries)
                if context is None or context.session.id != acted_in.id:
                    raise _Refused(self._no_session() if context is None else self._began_meanwhile())
                session = context.session
                actions = batch.actions if batch is not None else [(player, text)]
                if len(actions) > 1:
                    yield AnswersBatch(batch.ticket)
                pending = [Turn(0, session.id, 0, "player", who, what, "pending", time.time()) for who, what in actions]
                async with aclosing(self._run_turn(session, pending, context)) as events:
                    async for event in events:
                        if batch is not None and isinstance(event, Done | Failed):
                            batch.settle(event)
                        yield event
        except _Refused as refused:
            if batch is not None:
                batch.settle(refused.failure)
            yield refused.failure
        finally:
            if leading:  # the batch ends with its leader's stream, whatever ended it
                self.batches.close(cid, batch)
                batch.settle(Failed("internal", "The DM's answer was cut off; your action is kept. Send it again."))

    async def roll(
        self, channel: Channel, player: Player, notation: str, *, advantage: str | None = None,
        reason: str | None = None,
    ) -> PlayerRoll:
        """A player's own roll. Raises ``dice.DiceError`` for bad notation and ``RollRefused`` past the player's
        ``rolls_per_minute`` (both messages are for the player).

        Made while a DM turn runs in the channel, the roll is kept at once but enters the story after that turn's
        answer: the model reads it as the reply to what it asked, never before its own question."""
        if self.closing:
            raise RollRefused(STOPPING)
        result = keepable(dice.roll(notation, advantage=advantage, reason=reason))
        wait = await self._limited(self.roll_limiter, f"{channel.channel_id}:{player.id}")
        if wait is not None:
            per_minute = self.config.limits.rolls_per_minute
            raise RollRefused(f"You are rolling fast: at most {per_minute} rolls a minute in this channel. "
                              f"Roll again in {wait:.0f} s.")
        session = await self.store.active_session(channel.channel_id)
        running = self.slots.running(channel.channel_id) if session else 0
        if running:
            self._held[channel.channel_id] = session.id  # set before the await: the turn's end releases it
        in_session = await self.store.add_roll(channel, session.id if session else None,
                                               roll_record(player, result), held=bool(running))
        if running and self.slots.running(channel.channel_id) != running:
            await self.store.release_held_rolls(session.id)  # the turn ended while the roll was being stored
        return PlayerRoll(result, in_session)

    async def usage(self, channel: Channel) -> BudgetView | None:
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return None
        totals = await self.store.usage_totals(session.id)
        turns = await self.store.count_turns(session.id)
        return BudgetView(session, totals, self.budget.limit_for(session.token_limit), turns)

    async def _cap_limits(self, guild_id: str | None) -> CapLimits:
        """The server's token caps (its /config, else config.toml) for the budget's holds."""
        settings = await self.admin.settings(guild_id)
        return CapLimits(settings.player_daily_budget, settings.monthly_budget)

    async def guild_settings(self, guild_id: str | None) -> GuildSettings:
        """A server's effective settings (its /config overrides, else config.toml): persona, content rating,
        adventure budget, and the monthly and per-player daily caps (0 = no cap)."""
        return await self.admin.settings(guild_id)

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
        """Close the channel's session. Only its starter, or someone who may manage the channel, may.

        A turn streaming meanwhile is waited for (actions still queued are refused), so what /end reports is
        final and nothing is stored into the closed adventure afterwards."""
        if self.closing:
            return False, STOPPING
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return False, "There is no adventure running in this channel."
        if by.id != session.started_by.id and not can_manage:
            return False, (f"Only {session.started_by.name}, who started this adventure, or someone with the "
                           "Manage Channels permission can end it.")
        async with self.slots.exclusive(channel.channel_id):
            if await self.store.active_session(channel.channel_id) is None:
                return False, "This adventure has just ended."
            await self.store.end_session(session.id, by)
            totals = await self.store.usage_totals(session.id)
            turns = await self.store.count_turns(session.id)
        return True, (f"The adventure is over. {turns} turns were played, using {totals.usage.total:,} tokens. "
                      "Thanks for playing! /start opens a new one.")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Refuse new commands and wait for outcome writes still in flight (call before the store closes)."""
        self.closing = True
        await self.memory.aclose()  # summaries being written stop; their turns stay queued for the next start
        await self.recorder.wait(timeout)

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
    def _began_meanwhile() -> Failed:
        return Failed("no_session", "The adventure you acted in has ended and a new one has begun. Send your action "
                                    "again if it is meant for this one.")

    @staticmethod
    def _session_active(session: Session | None) -> Failed:
        who = f" (started by {session.started_by.name})" if session else ""
        return Failed("session_active", f"An adventure is already running in this channel{who}. "
                                        "Play with /act, or close it with /end first.")

    def _check_open(self) -> None:
        if self.closing:
            raise _Refused(Failed("stopping", STOPPING))

    async def _limited(self, limiter: ChannelRateLimiter, key: str) -> float | None:
        """The limiter's answer; if its storage fails (Redis down), the game goes on and the log says why."""
        try:
            return await limiter.acquire(key)
        except Exception:  # noqa: BLE001 - bookkeeping must never reach a player
            log.exception("rate limiter %s failed for %s; allowing the request", limiter.namespace, key)
            return None

    @asynccontextmanager
    async def _turn_slot(self, channel_id: str) -> AsyncIterator[None]:
        """Queue room, rate limit, then the channel's lock (steps 3–5 of the module docstring)."""

        async def admit() -> None:
            wait = await self._limited(self.rate_limiter, channel_id)
            if wait is not None:
                per_minute = self.config.limits.requests_per_minute
                raise _Refused(Failed("rate_limited", f"This channel has reached its limit of {per_minute} DM "
                                                      f"turns a minute. Try again in {wait:.0f} s.",
                                      retry_after=wait))

        try:
            async with self.slots.turn(channel_id, admit):
                try:
                    yield
                finally:
                    held = self._held.pop(channel_id, None)
                    if held is not None:  # rolls made during the turn join the story after it
                        await self.recorder.shielded(self.recorder.durably(lambda: self.store.release_held_rolls(held)))
        except SlotRefused as refused:
            raise _Refused(Failed(refused.kind, refused.message)) from None

    # -- the turn -------------------------------------------------------------------------------------------
