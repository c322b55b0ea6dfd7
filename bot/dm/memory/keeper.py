"""CampaignMemory: what the DM remembers of an adventure, and every decision about what a narration request holds.

- ``request``: assembles each narration request within ``max_prompt_tokens`` (see ``context``); after a
  context overflow the service asks for a ``shrunk`` one, and the adventure keeps that smaller ceiling.
- ``after_turn``: when the history window has stepped, the turns that left it are folded into the running
  summary by one LLM call in the background, so it never delays the narration. It is charged to the adventure
  and retried like any call; if it fails for good the turns stay queued (they are still sent verbatim while
  they fit) and the next attempt folds them in.
- pins (/remember, /forget) and /recap.
Everything is read from the store on each call, so a restart changes nothing the DM receives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import aclosing

from bot.config import Config
from bot.dm.guards import RetryPolicy, TokenBudget, estimate_tokens
from bot.dm.history import window_start
from bot.dm.memory.context import Parts, assemble, clean_summary, fit, units_of
from bot.dm.memory.recap import RECENT_TURNS, Recap
from bot.dm.memory.summary import fold_prompt, summary_system
from bot.llm.base import Finish, LLMProvider, LLMRequest, Message, ProviderError, TextChunk, ToolSpec, Usage
from bot.llm.pricing import price_for
from bot.store.base import CallRecord, Channel, Player, Session, Store, Story, Turn

log = logging.getLogger(__name__)

MAX_PINS = 25
MAX_PIN_CHARS = 300
SUMMARY_CHARS_PER_TOKEN = 6  # a summary longer than its bound allows (a server ignoring max_tokens) is cut
FOLD_INPUT_SHARE = 0.5  # a fold reads at most this share of max_prompt_tokens of turns (the rest waits)


class CampaignMemory:
    def __init__(self, config: Config, store: Store, provider: Callable[[], LLMProvider], retry: RetryPolicy,
                 budget: TokenBudget, *, system: str, tools: tuple[ToolSpec, ...]) -> None:
        self.config = config
        self.memory = config.memory
        self.store = store
        self._provider = provider  # the service's current provider (tests and benchmarks swap it)
        self.retry = retry
        self.budget = budget
        self.system = system
        self.tools = tools
        self.summary_model = self.memory.summary_model or config.llm.model
        self.summary_price = price_for(config.llm.provider, self.summary_model, config.prices)
        self._ceilings: dict[int, int] = {}  # session id → a smaller max_prompt_tokens learnt from an overflow
        self._folds: dict[int, asyncio.Task[None]] = {}

    @property
    def provider(self) -> LLMProvider:
        return self._provider()

    # -- narration requests ---------------------------------------------------------------------------------

    async def request(self, session: Session, extra: list[Turn], *, volatile: str = "",
                      system: str | None = None, tools: tuple[ToolSpec, ...] | None = None,
                      story: Story | None = None) -> LLMRequest:
        """The narration request: system, opening, summary, pins, then as many recent turns (``extra`` last:
        the action being answered) as fit, then ``volatile``. ``tools``: this turn's (default: all). ``story``:
        what ``Store.story_context`` returns, when it was already read (``Store.turn_context``)."""
        parts = await self._parts(session, extra, volatile, system or self.system,
                                  self.tools if tools is None else tools, story)
        ceiling = self._ceilings.get(session.id, self.memory.max_prompt_tokens)
        return fit(parts, ceiling, self._step)

    async def shrunk(self, session: Session, extra: list[Turn], failed: LLMRequest) -> LLMRequest:
        """After "prompt is too long": the same turn in a request about half as long (the oldest verbatim turns
        leave first). The adventure keeps the smaller ceiling, so the next turns do not overflow again."""
        parts = await self._parts(session, extra, failed.volatile, failed.system, failed.tools)
        floor = estimate_tokens(assemble(parts, max(0, len(parts.units) - 1)))  # the action alone, no history
        ceiling = floor + max(0, estimate_tokens(failed) - floor) // 2
        if ceiling < self._ceilings.get(session.id, self.memory.max_prompt_tokens):
            self._ceilings[session.id] = ceiling
        log.warning("the model's context is smaller than this request (about %d tokens) in channel %s; "
                    "retrying with at most %d (lower [memory] max_prompt_tokens for this model)",
                    estimate_tokens(failed), session.channel_id, ceiling)
        return fit(parts, ceiling, 1)

    @property
    def _step(self) -> int:
        return max(1, self.config.dm.history_messages // 2)

    async def _parts(self, session: Session, extra: list[Turn], volatile: str, system: str,
                     tools: tuple[ToolSpec, ...], story: Story | None = None) -> Parts:
        store, sid = self.store, session.id
        summary_text, start_seq = "", 0
        if self.memory.summaries:
            # One read: it stands before the LLM request (and the service has usually read it already).
            state, turns, pins = story if story is not None else await store.story_context(sid)
            if state is not None:
                summary_text, start_seq = clean_summary(state.text), state.folded_seq
        else:  # round 1's window, counting units: the verbatim turns start where the window starts
            total = await store.count_story_turns(sid) + sum(t.role != "roll" for t in extra)
            first = window_start(total, self.config.dm.history_messages)
            start_seq = (await store.story_turn_seq(sid, first - 1) or 0) if first else 0
            turns = await store.turns_after(sid, start_seq)
            pins = await store.pins(sid)
        return Parts(system, tools, session, summary_text, pins, units_of(turns + extra),
                     omitted=start_seq > 0, max_tokens=self.config.llm.max_output_tokens,
                     temperature=self.config.llm.temperature, volatile=volatile)

    # -- the running summary --------------------------------------------------------------------------------

    def after_turn(self, session: Session) -> None:
        """Called once after every stored turn: folds the turns that left the window, in the background."""
        running = self._folds.get(session.id)
        if not self.memory.summaries or (running is not None and not running.done()):
            return  # the fold running now checks again for more before it ends
        task = asyncio.get_running_loop().create_task(self._fold_all(session), name=f"summary-{session.id}")
        self._folds[session.id] = task
        task.add_done_callback(lambda done: self._folds.pop(session.id, None) if self._folds.get(session.id)
                               is done else None)

    async def settle(self) -> None:
        """Wait for the summaries being written (tests, and an orderly stop)."""
        while self._folds:
            await asyncio.gather(*list(self._folds.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the summaries in flight: nothing is lost, their turns stay queued for the next start."""
        for task in list(self._folds.values()):
            task.cancel()
        await asyncio.gather(*list(self._folds.values()), return_exceptions=True)

    async def _fold_all(self, session: Session) -> None:
        for _ in range(4):  # a window that stepped twice meanwhile, or a long queue after failures
            if not await self._fold(session):
                return

    async def _fold(self, session: Session) -> bool:
        """One summary call for the queued turns. True when it folded something and more may be queued."""
        store, sid = self.store, session.id
        total = await store.count_story_turns(sid)
        first = window_start(total, self.config.dm.history_messages)
        target = await store.story_turn_seq(sid, first - 1) if first else None
        state = await store.summary(sid)
        folded = state.folded_seq if state else 0
        if target is None or target <= folded:
            return False
        turns, chars, room = [], 0, int(self.memory.max_prompt_tokens * FOLD_INPUT_SHARE) * 4
        for turn in await store.turns_after(sid, folded):
            if turn.seq > target or (turns and chars + len(turn.content) > room):
                break
            turns.append(turn)
            chars += len(turn.content)
        while turns and turns[-1].role == "roll":  # a fold ends after an action or answer, like the window
            turns.pop()
        if not turns:
            return False
        return await self._write(session, state.text if state else "", turns)

    async def _write(self, session: Session, previous: str, turns: list[Turn]) -> bool:
        """Fold ``turns`` into ``previous`` and store the result. On a context overflow, the older half of the
        turns is folded instead (the rest waits for the next fold), so a summary can never get stuck either."""
        store, sid = self.store, session.id
        request = LLMRequest(summary_system(self.memory.summary_max_tokens),
                             (Message("user", fold_prompt(session, previous, turns)),),
                             self.memory.summary_max_tokens, None, model=self.summary_model, cache=False)
        current = await store.active_session(session.channel_id)
        hold = await self.budget.reserve(store, current if current and current.id == sid else session, None,
                                         estimate_tokens(request) + request.max_tokens)
        if isinstance(hold, str):
            log.warning("adventure %s: no budget left for its summary; %d turns stay queued", sid, len(turns))
            return False
        calls: list[CallRecord] = []
        try:
            return await self._fold_with(session, previous, turns, request, calls)
        finally:
            await asyncio.shield(self.budget.settle(store, hold, calls))

    async def _fold_with(self, session: Session, previous: str, turns: list[Turn], request: LLMRequest,
                         calls: list[CallRecord]) -> bool:
        store, sid = self.store, session.id
        try:
            text = await self._summarize(request, calls)
        except Exception as error:
            await asyncio.shield(store.charge_calls(sid, calls))
            half = _story_prefix(turns, len(turns) // 2)
            if isinstance(error, ProviderError) and error.kind == "context_overflow" and half:
                log.warning("adventure %s: %d turns are too long for one summary call; folding %d first", sid,
                            len(turns), len(half))
                return await self._write(session, previous, half)
            if isinstance(error, ProviderError):
                log.warning("adventure %s: the summary call failed for good (%s); %d turns stay queued for the "
                            "next attempt, and the DM still sees them while they fit", sid, error.message,
                            len(turns))
            else:
                log.exception("adventure %s: writing the summary failed; %d turns stay queued", sid, len(turns))
            return False
        except asyncio.CancelledError:
            await asyncio.shield(store.charge_calls(sid, calls))
            raise
        text = _bounded(text, self.memory.summary_max_tokens * SUMMARY_CHARS_PER_TOKEN)
        await store.save_summary(sid, text, turns[-1].seq, calls)
        log.info("adventure %s: %d turns folded into the summary (%d characters)", sid, len(turns), len(text))
        return True

    async def _summarize(self, request: LLMRequest, calls: list[CallRecord]) -> str:
        """One LLM call with the service's retry policy; every attempt's reported usage is charged."""
        async for attempt in self.retry.retrying():
            with attempt:
                text, usage, finished, received = "", None, False, False
                try:
                    async with aclosing(self.provider.stream(request)) as items:
                        async for item in items:
                            received = True
                            if isinstance(item, TextChunk):
                                text += item.text
                            elif isinstance(item, Usage):
                                usage = item
                            elif isinstance(item, Finish):
                                finished = True
                finally:
                    estimated = usage is None and received  # a server that reports no usage: our estimate
                    if estimated:
                        usage = Usage(estimate_tokens(request), len(text) // 4 + 1)
                    if usage is not None:
                        cost = self.summary_price.cost(usage) if self.summary_price else None
                        calls.append(CallRecord(self.provider.name, self.summary_model, usage, cost, estimated))
                if not finished or not text.strip():
                    raise ProviderError("stream", "the summary came back empty", retryable=True)
        return text.strip()

    # -- pins and recap -------------------------------------------------------------------------------------

    async def remember(self, channel: Channel, player: Player, fact: str) -> tuple[bool, str]:
        fact = " ".join((fact or "").split())
        if not fact:
            return False, "Say what the DM should remember, e.g. /remember fact:Oswin the innkeeper owes us 10 gold."
        if len(fact) > MAX_PIN_CHARS:
            return False, (f"That fact is too long ({len(fact):,} characters; the limit is {MAX_PIN_CHARS}). "
                           "Shorten it and try again.")
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return False, "There is no adventure running in this channel. Start one with /start."
        pin = await self.store.add_pin(session.id, player, fact, MAX_PINS)
        if pin is None:
            return False, (f"This adventure already has {MAX_PINS} pinned facts, the most it keeps. "
                           "/forget one first (/recap lists them with their numbers).")
        return True, f"📌 Pinned fact #{pin.number}: the DM will always keep it in mind. /forget number:{pin.number} removes it."

    async def forget(self, channel: Channel, by: Player, number: int, *, can_manage: bool) -> tuple[bool, str]:
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return False, "There is no adventure running in this channel."
        pin = next((p for p in await self.store.pins(session.id) if p.number == number), None)
        if pin is None:
            return False, f"There is no pinned fact #{number} in this adventure. /recap lists them."
        if by.id not in (pin.author.id, session.started_by.id) and not can_manage:
            return False, (f"Only {pin.author.name}, who pinned it, {session.started_by.name}, who started this "
                           "adventure, or someone with the Manage Channels permission can remove fact "
                           f"#{number}.")
        await self.store.remove_pin(session.id, number)
        return True, f"Fact #{number} is no longer pinned."

    async def recap(self, channel: Channel) -> Recap | None:
        """Reads only the store, never the channel's turn lock: it works while the DM is narrating."""
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            return None
        state = await self.store.summary(session.id) if self.memory.summaries else None
        total = await self.store.count_story_turns(session.id)
        first = window_start(total, self.config.dm.history_messages)
        target = await self.store.story_turn_seq(session.id, first - 1) if first else None
        pending = self.memory.summaries and target is not None and target > (state.folded_seq if state else 0)
        return Recap(session, clean_summary(state.text) if state else "", await self.store.pins(session.id),
                     await self.store.last_turns(session.id, RECENT_TURNS), pending, self.memory.summaries,
                     self.config.dm.history_messages)


def _story_prefix(turns: list[Turn], count: int) -> list[Turn]:
    """The first ``count`` turns, cut back so they end on an action or answer (never on a roll)."""
    head = turns[:count]
    while head and head[-1].role == "roll":
        head.pop()
    return head


def _bounded(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a line end when there is one in the last half."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", limit // 2, limit)
    return text[: cut if cut > 0 else limit].rstrip()

