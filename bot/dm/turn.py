"""The turn itself, once ``DMService`` has admitted it (its guards passed, the channel's slot is held): hold the
tokens, store the actions as pending, stream the model with retries and tool rounds (the DM's dice, the rules
engine's state tools), and store the outcome. ``DMService`` inherits it; it is its own module so that the order
of the guards (service.py) and the shape of one turn (here) can each be read on one screen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.dm import dice
from bot.dm.calls import CallResult
from bot.dm.events import DMEvent, Done, Failed, RollMade
from bot.dm.guards import TurnHold, estimate_tokens
from bot.dm.prompts import ROLL_DICE
from bot.dm.tools import RULE_TOOL_NAMES
from bot.llm.base import LLMRequest, Message, ProviderError, ToolCall, ToolResult
from bot.dm.rules.state import Party
from bot.store.base import CallRecord, Player, RollRecord, Session, Turn, TurnContext

if TYPE_CHECKING:
    from bot.dm.service import DMService

log = logging.getLogger("bot.dm.service")

MAX_TOOL_ROUNDS = 4  # LLM calls in one turn; a model that keeps calling tools is cut off here
MAX_KEPT_TOTAL = 2**63 - 1  # every roll is stored, and stores keep 64-bit integers


def keepable(result: dice.RollResult) -> dice.RollResult:
    """Honest dice means every roll is kept; a total past 64 bits ("9223372036854775808") cannot be."""
    if not -MAX_KEPT_TOTAL <= result.total <= MAX_KEPT_TOTAL:
        raise dice.DiceError("That roll's result is too large to keep.")
    return result


def roll_record(roller: Player, result: dice.RollResult, *, by_dm: bool = False) -> RollRecord:
    return RollRecord(roller, result.expression, result.total, result.detail, result.reason,
                      result.summary(roller.name), by_dm)


class TurnRunner:
    """The half of ``DMService`` that runs one admitted turn (its attributes are the service's)."""

    async def _request(self: DMService, session: Session, extra: list[Turn],
                       context: TurnContext | None = None) -> LLMRequest:
        """What the model sees is the memory's to decide; the party's state (it changes every turn) goes last, as
        the request's volatile part after the stable history, and its tools come with it. ``context``: the party
        and the story as the service read them (else they are read here)."""
        party = Party.from_json(context.party) if context is not None else None
        block, tools = await self.party.prepare(session, self.tools, state=party)
        return await self.memory.request(session, extra, volatile=block, tools=tools,
                                         system=await self.admin.system_prompt(session.guild_id),
                                         story=context.story if context is not None else None)

    async def _run_turn(self: DMService, session: Session, extra: list[Turn],
                        context: TurnContext | None = None) -> AsyncIterator[DMEvent]:
        """One DM turn answering the pending player turns ``extra`` (none for the opening), all in one call.

        The turn's estimated tokens are held against every cap (atomically in the store, so it holds across
        processes), then the hold is settled with the usage the provider reported. A batch's call counts
        against its first player's day."""
        request = await self._request(session, extra, context)
        payer = extra[0].author if extra else None
        hold = await self._hold(session, payer, estimate_tokens(request) + request.max_tokens)
        if isinstance(hold, str):
            yield Failed("budget", hold)
            return
        calls: list[CallRecord] = []
        try:
            async with aclosing(self._reserved_turn(session, extra, request, calls, hold)) as events:
                async for event in events:
                    yield event
        finally:
            await self.recorder.shielded(self.budget.settle(self.store, hold, calls))  # aclose waits for it too

    async def _hold(self: DMService, session: Session, payer: Player | None, tokens: int) -> TurnHold | str:
        """The turn's tokens held against every cap (or the refusal). If the turn is cancelled meanwhile (a stop),
        the hold still gets taken (a store write runs to its end) and is then released: a hold nobody settles
        would be charged in full once stale (bot/store/tokens.py)."""
        taking = self.recorder.background(self.budget.reserve(self.store, session, payer, tokens))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            self.recorder.background(self._release(taking))
            raise

    async def _release(self: DMService, taking: asyncio.Future[TurnHold | str]) -> None:
        try:
            hold = await taking
        except Exception:  # noqa: BLE001 - nothing was held
            log.exception("holding a cancelled turn's tokens failed")
            return
        if isinstance(hold, TurnHold):
            await self.budget.settle(self.store, hold, [])

    async def _reserved_turn(self: DMService, session: Session, extra: list[Turn], request: LLMRequest,
                             calls: list[CallRecord], hold: TurnHold) -> AsyncIterator[DMEvent]:
        player_turns: list[int] = []
        try:
            for turn in extra:
                player_turns.append(await self.recorder.durably(
                    lambda turn=turn: self.store.begin_turn(session.id, turn.author, turn.content)))
        except Exception:  # noqa: BLE001 - nothing was shown or spent: the players can simply send it again
            log.exception("could not store an action in channel %s", session.channel_id)
            await self.recorder.keep_failed(session, player_turns, [], [])
            yield Failed("internal", "Your action could not be saved, so the DM did not answer. Send it again "
                                     "in a moment.")
            return
        rolls: list[RollRecord] = []
        narration: list[str] = []
        base, shrunk = len(request.messages), False  # messages after ``base`` are this turn's tool rounds
        try:
            for round_no in range(1, MAX_TOOL_ROUNDS + 1):
                result = CallResult()
                for _fitting in range(2):
                    try:
                        async with aclosing(self.llm.call(request, result, calls)) as events:
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
                    if call.name in RULE_TOOL_NAMES:  # the rules engine carries it out, stores and reports it
                        answer, changes = await self.party.run_tool(session, player_turns[0] if player_turns else None, call)
                        for change in changes:
                            yield change
                        tool_results.append(answer)
                        continue
                    made, answer = self._dm_roll(call)
                    if made:
                        rolls.append(made[0])
                        yield RollMade(made[1], made[0].roller.name)
                    tool_results.append(answer)
                request = replace(request, messages=(*request.messages,
                                            Message("assistant", result.text, tool_calls=tuple(result.tool_calls)),
                                            Message("user", tool_results=tuple(tool_results))))
                if not await self.budget.extend(self.store, hold, calls, estimate_tokens(request) + request.max_tokens):
                    break  # no room in a budget for another round: the turn ends with what was said and rolled
        except ProviderError as error:
            log.warning("LLM call failed in channel %s (%s at %s): %s; the server said: %s", session.channel_id,
                        self.provider.name, getattr(self.provider, "endpoint", "?"), error.message, error.detail)
            await self.recorder.shielded(self.recorder.keep_failed(session, player_turns, calls, rolls))
            yield self._provider_failure(error)
            return
        except Exception:
            log.exception("DM turn failed in channel %s", session.channel_id)
            await self.recorder.shielded(self.recorder.keep_failed(session, player_turns, calls, rolls))
            yield Failed("internal", "Something went wrong on our side; it has been logged. Try again.")
            return
        except (asyncio.CancelledError, GeneratorExit):
            # The face went away mid-turn (shutdown, or it stopped listening): keep the action and the shown
            # rolls, charge what was reported, and never store half an answer. Shielded: this write must not be
            # cancelled in turn (aclose waits for it).
            self.recorder.background(self.recorder.keep_failed(session, player_turns, calls, rolls, interrupted=True))
            raise
        text = "".join(narration).strip()
        if not text and not rolls:  # nothing to read and nothing rolled: not a turn of the story
            await self.recorder.shielded(self.recorder.keep_failed(session, player_turns, calls, rolls))
            yield Failed("empty", "The DM had nothing to say (the model sent an empty answer). Try again.")
            return
        saved = await self.recorder.shielded(self.recorder.save(session, player_turns, text, calls, rolls))  # a stop cannot cut it
        if not saved:
            yield Failed("unsaved", "This answer could not be saved, so the DM will not remember it; your action "
                                    "is kept. Try again in a moment.")
            return
        self.memory.after_turn(session)  # the running summary, in the background (never delays the turn)
        yield Done(result.finish)

    def _dm_roll(self: DMService, call: ToolCall) -> tuple[tuple[RollRecord, dice.RollResult] | None, ToolResult]:
        if call.name != ROLL_DICE.name:
            known = ", ".join(t.name for t in self.tools)
            return None, ToolResult(call.id, f"There is no tool named {call.name!r}; the tools are {known}.",
                                    is_error=True)
        args = call.arguments
        if call.malformed or not isinstance(args.get("notation"), str):
            return None, ToolResult(call.id, "roll_dice needs a 'notation' string, e.g. 1d20+3.", is_error=True)
        for_whom = str(args.get("for_whom") or "the DM")[:60]
        try:
            result = keepable(dice.roll(args["notation"], reason=str(args.get("reason") or "") or None))
        except dice.DiceError as error:
            return None, ToolResult(call.id, f"Could not roll: {error}", is_error=True)
        record = roll_record(Player("dm", f"The DM, for {for_whom}"), result, by_dm=True)
        return (record, result), ToolResult(call.id, record.summary)

    def _provider_failure(self: DMService, error: ProviderError) -> Failed:
        if self.retry.asks_too_long(error):
            return Failed("retry_later", f"The AI provider is busy and asks us to wait {error.retry_after:.0f} s. "
                                         f"Try again in {error.retry_after:.0f} s.", retry_after=error.retry_after)
        if error.retryable:
            return Failed("unavailable", f"The AI provider is not answering right now ({error.message}). "
                                         "Try again in a minute.")
        return Failed("rejected", f"The AI provider refused the request ({error.message}). "
                                  "If this keeps happening, tell the bot's admin.")
