"""Terminal play has /character, /party and /combat, and shows the engine's changes as their own lines."""

from __future__ import annotations

import io

from bot.llm.base import Finish, TextChunk, ToolCall, Usage
from bot.terminal import play
from tests.fakes import ScriptedProvider, reply
from tests.unit.conftest import make_config


async def test_a_fight_in_the_terminal(tmp_path):
    provider = ScriptedProvider(
        reply("Rats pour out of the cellar."),
        [Usage(40), TextChunk("Rats! "),
         ToolCall("a", "start_combat", {"combatants": [{"name": "Giant Rat", "hp": 7, "ac": 12, "initiative_bonus": 2}]}),
         ToolCall("b", "update_character", {"name": "Giant Rat", "hp_change": -3, "reason": "torch"}),
         Usage(40, 10), Finish("tool_calls")],
        reply("The rat squeals."),
    )
    lines = iter(["", '/character Thessaly role="half-elf rogue" max_hp=12 ac=14 initiative_bonus=3',
                  "/character Thessaly ac=abc", "/character Thessaly speed=30", "I swing my torch", "/combat",
                  "/party", "/quit"])

    async def read(prompt: str) -> str | None:
        return next(lines, None)

    out = io.StringIO()
    config = make_config(database={"url": f"sqlite:///{tmp_path / 'term.db'}"})
    assert await play(config, read=read, out=out, provider=provider, name="aria") == 0
    text = out.getvalue()
    assert "Thessaly — half-elf rogue (played by aria)\n12/12 HP · AC 14 · initiative +3" in text
    assert "! ac must be a whole number." in text and "! Unknown option speed" in text
    assert "  ⚔️ Combat begins! Initiative: " in text
    assert "  🩸 Giant Rat takes 3 damage — 4/7 HP" in text
    assert "Giant Rat — 4/7 HP · AC 12" in text  # /combat, without Discord markup
    assert "• Thessaly (aria, half-elf rogue) — 12/12 HP · AC 14 · no conditions" in text  # /party
    assert "[party]" in provider.requests[1].volatile
