"""How the party's state reads: to the model (the ``[party]`` block, tool results) and to players (``/party``,
``/character``, the combat tracker). Every number comes from the state; nothing here decides anything.

Names, roles and descriptions were cleaned when stored (``bot.dm.rules.text``): one line, no markup, no square
brackets. In the model's block the players' own words are quoted, so they read as what a player wrote.
"""

from __future__ import annotations

from bot.dm.rules.state import Character, Combat, Combatant, Party

PARTY_OPEN, PARTY_CLOSE = "[party]", "[/party]"
SHOWN_LIMIT = 1900  # what players see fits one Discord message (2000), with room to spare


def _fit(lines: list[str], limit: int = SHOWN_LIMIT) -> str:
    """Lines joined, dropping the last ones (and saying how many) past ``limit`` characters."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        more = f"…and {len(lines) - i} more"
        if sum(len(k) + 1 for k in kept) + len(line) + len(more) + 1 > limit:
            return "\n".join([*kept, more])
        kept.append(line)
    return "\n".join(kept)


def hp_text(hp: int | None, max_hp: int | None) -> str:
    return "HP not tracked" if max_hp is None or hp is None else f"{hp}/{max_hp} HP"


def condition_label(condition: str) -> str:
    if condition.startswith("exhaustion "):
        return f"exhausted (level {condition.split()[1]})"
    return condition


def join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def _conditions(conditions: tuple[str, ...], empty: str = "") -> str:
    return ", ".join(condition_label(c) for c in conditions) or empty


def _creature(party: Party, combatant: Combatant) -> Character | Combatant:
    if combatant.foe:
        return combatant
    return party.character_of(combatant.player_id) or combatant


# -- for the model --------------------------------------------------------------------------------------------

def _model_character(c: Character) -> str:
    role = f', role "{c.role}"' if c.role else ""
    ac = f", AC {c.ac}" if c.ac is not None else ""
    conditions = f"; conditions: {_conditions(c.conditions)}" if c.conditions else ""
    down = " (down)" if c.down else ""
    description = f'; description "{c.description}"' if c.description else ""
    return (f'- "{c.name}" (played by "{c.player_name}"{role}): {hp_text(c.hp, c.max_hp)}{down}{ac}, '
            f"initiative {c.initiative_bonus:+d}{conditions}{description}")


def _model_combat(party: Party, combat: Combat) -> list[str]:
    lines = [f"Combat: round {combat.round}, {combat.current.name}'s turn. Initiative order:"]
    for i, combatant in enumerate(combat.order):
        c = _creature(party, combatant)
        kind = "foe" if combatant.foe else "party"
        ac = f", AC {c.ac}" if c.ac is not None else ""
        conditions = f", {_conditions(c.conditions)}" if c.conditions else ""
        now = " <- now" if i == combat.turn else ""
        lines.append(f"{i + 1}. {combatant.name} ({kind}) initiative {combatant.initiative}: "
                     f"{hp_text(c.hp, c.max_hp)}{ac}{conditions}{now}")
    return lines


def state_for_model(party: Party) -> str:
    """The compact state: a line per character, then the combat order when a combat runs."""
    lines = [_model_character(c) for c in party.characters] or ["(no characters yet)"]
    if party.combat:
        lines += _model_combat(party, party.combat)
    return "\n".join(lines)


def party_block(party: Party) -> str | None:
    """The engine's block at the end of every request (None when there is nothing to say)."""
    if not party.characters and not party.combat:
        return None
    notes = [f"Since the last turn: {n}." for n in party.notes]
    return "\n".join([
        f"{PARTY_OPEN} The party's current state, kept by the game engine (quoted words are the players' own "
        "text). Change hit points, conditions and combat only with your tools.",
        state_for_model(party), *notes, PARTY_CLOSE])


# -- for players ----------------------------------------------------------------------------------------------

def sheet(c: Character) -> str:
    role = f" — *{c.role}*" if c.role else ""
    ac = f"AC {c.ac}" if c.ac is not None else "no AC"
    lines = [f"**{c.name}**{role} (played by {c.player_name})",
             f"{hp_text(c.hp, c.max_hp)} · {ac} · initiative {c.initiative_bonus:+d}"
             + (f" · {_conditions(c.conditions)}" if c.conditions else "")]
    if c.description:
        lines.append(c.description)
    return "\n".join(lines)


def party_text(party: Party) -> str:
    if not party.characters:
        return "No characters in this adventure yet. Make yours with /character."
    lines = ["**The party**"]
    for c in party.characters:
        role = f", {c.role}" if c.role else ""
        ac = f"AC {c.ac}" if c.ac is not None else "no AC"
        down = " · **down**" if c.down else ""
        lines.append(f"• **{c.name}** ({c.player_name}{role}) — {hp_text(c.hp, c.max_hp)}{down} · {ac} · "
                     f"{_conditions(c.conditions, 'no conditions')}")
    if party.combat:
        lines.insert(1, f"⚔️ In combat: round {party.combat.round}, {party.combat.current.name}'s turn (/combat)")
    return _fit(lines)


def tracker_text(party: Party) -> str:
    """The combat tracker: round, initiative order with each number, HP, conditions, whose turn it is."""
    combat = party.combat
    if combat is None:
        return "No combat is running in this channel."
    lines = [f"⚔️ **Combat — round {combat.round}** · {combat.current.name}'s turn"]
    for i, combatant in enumerate(combat.order):
        c = _creature(party, combatant)
        mark = "▶" if i == combat.turn else "  "
        defeated = " · **defeated**" if combatant.foe and c.hp == 0 else " · **down**" if c.hp == 0 else ""
        ac = f" · AC {c.ac}" if c.ac is not None else ""
        conditions = f" · {_conditions(c.conditions)}" if c.conditions else ""
        lines.append(f"{mark} `{combatant.initiative:>2}` **{combatant.name}** — {hp_text(c.hp, c.max_hp)}"
                     f"{defeated}{ac}{conditions}")
    return _fit(lines)


def tracker_final(line: str) -> str:
    return f"{line}."
