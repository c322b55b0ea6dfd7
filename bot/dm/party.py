"""PartyService: the rules engine behind the DM service. It loads the adventure's party, has the engine change
it (on the DM's tool calls or a player's /character), stores the result, and says what to show.

The engine (``bot.dm.rules``) decides; the store keeps the state document and the lines of every change; the
faces show ``StateChanged`` events and the texts returned here. No Discord here.
"""

from __future__ import annotations

import random
from dataclasses import replace

from bot.dm.events import StateChanged
from bot.dm.rules import engine, render
from bot.dm.rules.state import Character, Party
from bot.dm.rules.text import RuleError
from bot.dm.tools import RULE_TOOL_NAMES
from bot.llm.base import ToolCall, ToolResult, ToolSpec
from bot.store.base import Channel, Player, Session, Store

NO_ADVENTURE = "There is no adventure running in this channel. Start one with /start."


class PartyService:
    def __init__(self, store: Store, rng: random.Random | None = None) -> None:
        self.store = store
        self.rng = rng  # None: the dice engine's own source; a seeded Random makes every roll repeatable

    async def load(self, session_id: int) -> Party:
        return Party.from_json(await self.store.party_state(session_id))

    # -- the DM's side --------------------------------------------------------------------------------------

    async def prepare(self, session: Session, tools: tuple[ToolSpec, ...], *,
                      state: Party | None = None) -> tuple[str, tuple[ToolSpec, ...]]:
        """The request's volatile text and tools. With a party (or a combat): the engine's ``[party]`` block, which
        goes last, after everything stable, so the cached prefix stays the same from turn to turn (sheet changes
        it tells of are then marked as told), and the state tools. Without one, story-only play: the request is
        as it was before the rules engine (no block, no state tools, no tokens spent on them). ``state``: the
        party as already read (``Store.turn_context``)."""
        party = state if state is not None else await self.load(session.id)
        block = render.party_block(party)
        if block is None:
            return "", tuple(t for t in tools if t.name not in RULE_TOOL_NAMES)
        if party.notes:
            await self.store.change_party_state(
                session.id, None, lambda data: (replace(Party.from_json(data), notes=()).to_json(), [], None))
        return block, tools

    async def run_tool(self, session: Session, turn_id: int | None,
                       call: ToolCall) -> tuple[ToolResult, list[StateChanged]]:
        """One of the DM's state tools. A bad call comes back as an error result and changes nothing."""
        if call.malformed:
            return ToolResult(call.id, f"{call.name} needs a JSON object of arguments.", is_error=True), []

        def apply(data: str | None) -> tuple[str, list[str], engine.Outcome]:
            outcome = engine.call_tool(Party.from_json(data), call.name, dict(call.arguments), self.rng)
            return outcome.party.to_json(), list(outcome.lines), outcome

        try:
            outcome = await self.store.change_party_state(session.id, turn_id, apply)
        except RuleError as error:
            return ToolResult(call.id, f"Not done: {error}", is_error=True), []
        return ToolResult(call.id, outcome.result), [StateChanged(line, outcome.party) for line in outcome.lines]

    # -- the players' side ----------------------------------------------------------------------------------

    async def character(self, channel: Channel, player: Player, *, name: str, role: str | None = None,
                        description: str | None = None, max_hp: int | None = None, ac: int | None = None,
                        initiative_bonus: int | None = None) -> Character:
        """/character: create or update the caller's character. Raises ``RuleError`` (a short sentence)."""
        session = await self._session(channel)

        def apply(data: str | None) -> tuple[str, list[str], Character]:
            party, character = engine.set_character(
                Party.from_json(data), player.id, player.name, name=name, role=role, description=description,
                max_hp=max_hp, ac=ac, initiative_bonus=initiative_bonus)
            return party.to_json(), [], character

        return await self.store.change_party_state(session.id, None, apply)

    async def view(self, channel: Channel) -> Party:
        """The channel's party now. Raises ``RuleError`` when no adventure runs there."""
        return await self.load((await self._session(channel)).id)

    async def party_text(self, channel: Channel) -> str:
        return render.party_text(await self.view(channel))

    async def combat_text(self, channel: Channel) -> str:
        return render.tracker_text(await self.view(channel))

    async def _session(self, channel: Channel) -> Session:
        session = await self.store.active_session(channel.channel_id)
        if session is None:
            raise RuleError(NO_ADVENTURE)
        return session
