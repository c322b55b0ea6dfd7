"""What the rules engine adds to every request, in characters and estimated tokens (the bot's own 4-characters-
a-token estimate): the [party] block for a party of four, alone and in a combat with six foes, and the state
tools' specs and system-prompt paragraph (part of the cached prefix). Run: .venv/bin/python -m bench.party_size"""

from __future__ import annotations

import random
from dataclasses import replace

from bot.dm.rules import engine
from bot.dm.rules.render import party_block
from bot.dm.rules.state import Party
from bot.dm.tools import RULE_TOOLS, RULES_PROMPT


def main() -> None:
    party = Party()
    for i, name in enumerate(["Thessaly", "Bram", "Morwen", "Ilya"]):
        party, _ = engine.set_character(party, f"u{i}", f"player{i}", name=name, role="half-elf rogue",
                                        description="quick, curious, afraid of deep water", max_hp=12 + i, ac=14,
                                        initiative_bonus=i)
    party = replace(party, notes=())
    rows = [("[party] block, 4 characters", len(party_block(party)))]
    foes = [{"name": f"Goblin {i}", "hp": 7, "ac": 13, "initiative_bonus": 2} for i in range(1, 7)]
    party = engine.start_combat(party, {"combatants": foes}, random.Random(1)).party
    rows.append(("[party] block, 4 characters + 6 foes in combat", len(party_block(party))))
    rows.append(("state tool specs (5 tools)", sum(len(t.description) + len(str(t.parameters)) for t in RULE_TOOLS)))
    rows.append(("system prompt paragraph", len(RULES_PROMPT)))
    for what, chars in rows:
        print(f"{what:<50} {chars:>6} chars  ~{chars // 4:>5} tokens")


if __name__ == "__main__":
    main()
