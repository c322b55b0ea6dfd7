"""Honest dice, as the channel shows them: in a scripted session with player rolls and several DM rolls (two
in one turn), every number shown as a roll is one the engine made and stored, and the model got exactly that."""

from __future__ import annotations

import re
import sqlite3

from bot.dm.prompts import system_prompt
from bot.config import DMConfig
from bot.llm.base import Finish, TextChunk, ToolCall, Usage
from tests.discord.conftest import GENERAL, OTHER, PLAYER
from tests.fakes import ScriptedProvider, reply

TOTAL = re.compile(r"→ \*\*(-?\d+)\*\*")


def tool_round(text: str, *calls: tuple[str, str, str]) -> list:
    return [Usage(50), TextChunk(text),
            *[ToolCall(f"t{i}-{n}", "roll_dice", {"notation": n, "reason": r, "for_whom": w})
              for i, (n, r, w) in enumerate(calls)],
            Usage(50, 10), Finish("tool_calls")]


async def test_every_number_shown_as_a_roll_came_from_the_engine(make_dm_bot, tmp_path):
    provider = ScriptedProvider(
        reply("A goblin ambush!"),
        tool_round("Two goblins attack. ", ("1d20+4", "first goblin's attack", "goblin one"),
                   ("1d20+4", "second goblin's attack", "goblin two")),
        tool_round("One hits. ", ("1d6+2", "scimitar damage", "goblin one")),
        reply("You stagger but stand."),
        reply("Bram's arrow flies true."),
    )
    h = await make_dm_bot(provider, database=str(tmp_path / "honest.db"))
    await h.run("start")
    await h.run("roll", {"dice": "1d20+5", "reason": "initiative"}, user=PLAYER)
    await h.run("act", {"action": "I raise my shield"}, user=PLAYER)
    await h.run("roll", {"dice": "1d20+3", "reason": "shortbow attack", "advantage": "advantage"}, user=OTHER)
    await h.run("act", {"action": "I shoot the goblin"}, user=OTHER)

    shown = [int(t) for m in h.standin.messages(GENERAL) if not m.deleted for t in TOTAL.findall(m.content)]
    with sqlite3.connect(tmp_path / "honest.db") as db:
        stored = [row[0] for row in db.execute("SELECT total FROM rolls ORDER BY id")]
        by_dm = [row[0] for row in db.execute("SELECT by_dm FROM rolls ORDER BY id")]
    assert len(shown) == 5 and sorted(shown) == sorted(stored)
    assert by_dm.count(1) == 3

    # What the model was told after its own rolls is exactly what was stored and shown.
    results = [r for request in provider.requests for m in request.messages for r in m.tool_results]
    told = [int(re.search(r"\(total (-?\d+)", r.content).group(1)) for r in results]
    assert set(told) <= set(stored) and len(told) >= 3
    # Players' rolls reach the model as [dice] lines, never as model text.
    last = provider.requests[-1].messages
    assert any(m.role == "user" and "[dice]" in m.text and "shortbow attack" in m.text for m in last)
    assert not any(m.role == "assistant" and "[dice]" in m.text for m in last)


def test_the_system_prompt_forbids_invented_rolls():
    prompt = system_prompt(DMConfig(), tools=True)
    assert "Never state, imply or invent the result of a die" in prompt
    assert "roll_dice tool" in prompt and "/roll 1d20+3" in prompt
