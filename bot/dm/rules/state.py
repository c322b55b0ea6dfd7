"""The party's state: characters, and the combat when one runs. Plain frozen values, kept as one JSON document
per adventure (the store only reads and writes the document; every rule is in ``bot.dm.rules.engine``).

A party character's hit points and conditions live on its ``Character`` only; in a combat its ``Combatant``
entry holds just its initiative and points at the character (``player_id``), so the two can never disagree.
Foes live on their ``Combatant`` and leave with the combat.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Character:
    player_id: str
    player_name: str
    name: str
    role: str = ""
    description: str = ""
    max_hp: int | None = None  # None: no hit points tracked (story-only play)
    hp: int | None = None
    ac: int | None = None
    initiative_bonus: int = 0
    conditions: tuple[str, ...] = ()

    @property
    def down(self) -> bool:
        return self.hp == 0


@dataclass(frozen=True, slots=True)
class Combatant:
    name: str
    initiative: int  # the total: 1d20 + bonus
    initiative_bonus: int
    roll: int  # the d20 alone, shown on the tracker
    player_id: str | None = None  # a party character (its HP and conditions are on the Character); None: a foe
    hp: int | None = None  # foes only
    max_hp: int | None = None
    ac: int | None = None
    conditions: tuple[str, ...] = ()

    @property
    def foe(self) -> bool:
        return self.player_id is None


@dataclass(frozen=True, slots=True)
class Combat:
    order: tuple[Combatant, ...]  # sorted by initiative (engine.initiative_key)
    round: int = 1
    turn: int = 0  # index into order of whose turn it is

    @property
    def current(self) -> Combatant:
        return self.order[self.turn]


@dataclass(frozen=True, slots=True)
class Party:
    characters: tuple[Character, ...] = ()
    combat: Combat | None = None
    notes: tuple[str, ...] = field(default=())  # players' sheet changes the DM has not been told of yet

    def character_of(self, player_id: str) -> Character | None:
        return next((c for c in self.characters if c.player_id == player_id), None)

    def with_character(self, character: Character) -> Party:
        others = tuple(c for c in self.characters if c.player_id != character.player_id)
        if len(others) == len(self.characters):
            return replace(self, characters=(*self.characters, character))
        return replace(self, characters=tuple(character if c.player_id == character.player_id else c
                                              for c in self.characters))

    # -- the stored document ----------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> Party:
        if not text:
            return cls()
        data = json.loads(text)
        combat = data.get("combat")
        return cls(
            characters=tuple(Character(**{**c, "conditions": tuple(c["conditions"])}) for c in data["characters"]),
            combat=Combat(tuple(Combatant(**{**x, "conditions": tuple(x["conditions"])}) for x in combat["order"]),
                          combat["round"], combat["turn"]) if combat else None,
            notes=tuple(data.get("notes", ())),
        )
