"""The rules: every change to hit points, conditions, initiative and turns happens here, and only here.

Each operation takes the party's state and returns an ``Outcome`` (the new state, the lines players see, and
the result the model is told) or raises ``RuleError`` having changed nothing. They are pure: no I/O, and given
the same ``rng`` the same dice. The model proposes through its tools (``call_tool``); a player edits their own
sheet (``set_character``); nothing else changes the state.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any

from bot.dm import dice
from bot.dm.rules import conditions as cond
from bot.dm.rules.render import condition_label, hp_text, join_words, state_for_model
from bot.dm.rules.state import Character, Combat, Combatant, Party
from bot.dm.rules.text import RuleError, clean_label, clean_text, key

MAX_FOES = 20
MAX_HP = 9_999
MAX_HP_CHANGE = 10_000
MAX_NOTES = 10
AC_RANGE, BONUS_RANGE, SHEET_HP_RANGE = (1, 40), (-10, 20), (1, 999)
ATTACK_BONUS_RANGE = (-20, 30)
DEFAULT_AC = 10  # a sheet without AC: what an unarmoured commoner has


@dataclass(frozen=True, slots=True)
class Outcome:
    party: Party
    lines: tuple[str, ...]  # one short line per change, shown to the players
    result: str  # what the model is told: what happened, then the new state


# -- arguments ------------------------------------------------------------------------------------------------

def _int(args: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = args.get(name, default)
    if value is None and default is None:
        raise RuleError(f"'{name}' is required (a whole number from {low} to {high}).")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"'{name}' must be a whole number from {low} to {high}.")
    if not low <= value <= high:
        raise RuleError(f"'{name}' must be from {low} to {high} (got {value}).")
    return value


def _name(args: dict[str, Any], field: str) -> str:
    value = args.get(field)
    if not isinstance(value, str) or not clean_label(value):
        raise RuleError(f"'{field}' must be a name.")
    return clean_label(value)


def _strings(args: dict[str, Any], field: str) -> list[str]:
    value = args.get(field) or []
    if not isinstance(value, list):
        raise RuleError(f"'{field}' must be a list of conditions, e.g. [\"poisoned\"].")
    if len(value) > cond.MAX_CONDITIONS:
        raise RuleError(f"At most {cond.MAX_CONDITIONS} conditions in '{field}'.")
    return [cond.normalize(v) for v in value]


# -- who is who -----------------------------------------------------------------------------------------------

def _find(party: Party, name: str) -> Character | Combatant:
    wanted = key(name)
    for character in party.characters:
        if key(character.name) == wanted:
            return character
    for combatant in party.combat.order if party.combat else ():
        if combatant.foe and key(combatant.name) == wanted:
            return combatant
    known = [c.name for c in party.characters] + [c.name for c in party.combat.order if c.foe] if party.combat \
        else [c.name for c in party.characters]
    listed = ", ".join(known) if known else "nobody yet"
    raise RuleError(f"There is no one named {name!r} (known: {listed}).")


def _put(party: Party, creature: Character | Combatant) -> Party:
    if isinstance(creature, Character):
        return party.with_character(creature)
    assert party.combat is not None
    order = tuple(creature if key(c.name) == key(creature.name) and c.foe else c for c in party.combat.order)
    return replace(party, combat=replace(party.combat, order=order))


def _label(creature: Character | Combatant) -> str:
    return hp_text(creature.hp, creature.max_hp)


# -- the model's tools ----------------------------------------------------------------------------------------

def update_character(party: Party, args: dict[str, Any]) -> Outcome:
    creature = _find(party, _name(args, "name"))
    change = _int(args, "hp_change", -MAX_HP_CHANGE, MAX_HP_CHANGE, default=0)
    adds, removes = _strings(args, "add_conditions"), _strings(args, "remove_conditions")
    reason = clean_text(args.get("reason") or "", 100) if isinstance(args.get("reason"), str) else ""
    if not change and not adds and not removes:
        raise RuleError("Nothing to change: give hp_change, add_conditions or remove_conditions.")
    if change and creature.max_hp is None:
        raise RuleError(f"{creature.name} has no hit points tracked (no max HP on the sheet): change conditions only.")
    return _change(party, creature, change, adds, removes, reason)


def _change(party: Party, creature: Character | Combatant, change: int, adds: list[str], removes: list[str],
            reason: str, *, shown_damage: str = "") -> Outcome:
    parts: list[str] = []
    hp = creature.hp
    if change and hp is not None and creature.max_hp is not None:
        hp = max(0, min(creature.max_hp, hp + change))
        if change < 0:
            parts.append(f"takes {-change} damage{shown_damage}")
        else:
            parts.append(f"regains {hp - creature.hp} HP")
    conditions = creature.conditions
    for condition in removes:
        if condition in conditions or (condition.startswith("exhaustion") and cond.exhaustion_level(conditions)):
            gone = [c for c in conditions if c not in cond.remove(conditions, condition)]
            conditions = cond.remove(conditions, condition)
            parts.append(f"is no longer {', '.join(condition_label(c) for c in gone)}")
    added: list[str] = []
    for condition in adds:
        before = conditions
        conditions = cond.add(conditions, condition)
        added += [c for c in conditions if c not in before]
    fell = hp == 0 and creature.hp != 0
    if fell and "unconscious" not in conditions:
        conditions = cond.add(conditions, "unconscious")  # said below as "falls unconscious" / "is defeated"
    elif hp is not None and hp > 0 and creature.hp == 0 and "unconscious" in conditions and \
            "unconscious" not in adds:
        conditions = cond.remove(conditions, "unconscious")  # back on their feet
        parts.append("comes to")
    shown = [condition_label(c) for c in added if not (fell and c == "unconscious")]
    if shown:
        parts.append("is " + ", ".join(shown))
    if fell:
        parts.append("falls unconscious" if isinstance(creature, Character) else "is defeated")
    updated = replace(creature, hp=hp, conditions=conditions)
    if updated == creature:
        line = f"🌀 {creature.name}: no change — {_label(creature)}"
    else:
        mark = "🩸" if change < 0 else "💚" if change > 0 else "🌀"
        line = f"{mark} {creature.name} {join_words(parts)} — {_label(updated)}"
    party = _put(party, updated)
    rules = [d for d in (cond.describe(c) for c in added) if d]  # the SRD's line for each new condition
    why = f" ({reason})" if reason else ""
    result = f"{line}{why}." + (f"\nRules: {' '.join(rules)}" if rules else "") + f"\n{state_for_model(party)}"
    return Outcome(party, (line,), result)


def initiative_key(combatant: Combatant) -> tuple[int, int, str]:
    """Highest total first; a tie goes to the higher bonus, then to the name: the same way every time."""
    return (-combatant.initiative, -combatant.initiative_bonus, key(combatant.name))


def _roll_initiative(name: str, bonus: int, rng: random.Random | None, **fields: Any) -> Combatant:
    rolled = dice.roll(f"1d20{bonus:+d}", rng=rng)
    return Combatant(name, rolled.total, bonus, rolled.total - bonus, **fields)


def start_combat(party: Party, args: dict[str, Any], rng: random.Random | None = None) -> Outcome:
    if party.combat is not None:
        raise RuleError("A combat is already running: end_combat first, or go on with next_turn.")
    foes = args.get("combatants") or []
    if not isinstance(foes, list) or not all(isinstance(f, dict) for f in foes):
        raise RuleError("'combatants' must be a list of {name, hp, ac, initiative_bonus} objects.")
    if len(foes) > MAX_FOES:
        raise RuleError(f"At most {MAX_FOES} combatants besides the party.")
    taken = {key(c.name) for c in party.characters}
    checked = []
    for foe in foes:
        name = _name(foe, "name")
        if key(name) in taken:
            raise RuleError(f"The name {name!r} is taken: give each combatant its own name, e.g. 'Goblin 2'.")
        taken.add(key(name))
        checked.append((name, _int(foe, "hp", 1, MAX_HP), _int(foe, "ac", *AC_RANGE),
                        _int(foe, "initiative_bonus", *BONUS_RANGE, default=0)))
    if len(checked) + len(party.characters) < 2:
        raise RuleError("A combat needs at least two sides: name the foes in 'combatants'.")
    order = [_roll_initiative(c.name, c.initiative_bonus, rng, player_id=c.player_id) for c in party.characters]
    order += [_roll_initiative(n, b, rng, hp=hp, max_hp=hp, ac=ac) for n, hp, ac, b in checked]
    combat = Combat(tuple(sorted(order, key=initiative_key)))
    party = replace(party, combat=combat)
    line = (f"⚔️ Combat begins! Initiative: {', '.join(f'{c.name} {c.initiative}' for c in combat.order)} "
            f"— round 1, {combat.current.name}'s turn")
    return Outcome(party, (line,), f"{line}.\n{state_for_model(party)}")


_DICE = re.compile(r"(?<![\w.])(\d*)d(\d+|%)")
_ANNOTATION = re.compile(r"(\[[^\]]*\])")


def double_dice(notation: str) -> str:
    """A critical hit's damage: every die rolled twice as many times ("1d8+3" -> "2d8+3")."""
    parts = _ANNOTATION.split(notation)
    for i in range(0, len(parts), 2):
        parts[i] = _DICE.sub(lambda m: f"{2 * int(m.group(1) or 1)}d{m.group(2)}", parts[i].lower())
    return "".join(parts)


def _plain(result: dice.RollResult) -> str:
    plain = re.sub(r"~~(.*?)~~", r"\1 dropped", result.detail).replace("**", "").replace("`", "")
    return re.sub(r"\s*=\s*-?\d+$", "", plain)  # the total is shown next to it


def attack(party: Party, args: dict[str, Any], rng: random.Random | None = None) -> Outcome:
    attacker, target = _find(party, _name(args, "attacker")), _find(party, _name(args, "target"))
    if attacker is target:
        raise RuleError(f"{attacker.name} cannot attack itself.")
    bonus = _int(args, "attack_bonus", *ATTACK_BONUS_RANGE)
    advantage = args.get("advantage")
    if advantage not in (None, "", "none", "advantage", "disadvantage"):
        raise RuleError("'advantage' must be \"advantage\", \"disadvantage\" or null.")
    damage = args.get("damage")
    if not isinstance(damage, str):
        raise RuleError("'damage' must be dice notation, e.g. \"1d8+3\".")
    try:
        dice.roll(damage, rng=random.Random(0))  # bad notation is refused before any die is rolled
        dice.roll(double_dice(damage), rng=random.Random(0))
        to_hit = dice.roll(f"1d20{bonus:+d}", advantage=advantage or None, rng=rng)
    except dice.DiceError as error:
        raise RuleError(f"Bad damage notation: {error}") from None
    ac = target.ac if target.ac is not None else DEFAULT_AC
    natural = {"success": 20, "failure": 1}.get(to_hit.critical or "")
    hit = to_hit.critical == "success" or (to_hit.critical != "failure" and to_hit.total >= ac)
    how = f" with {advantage}" if advantage in ("advantage", "disadvantage") else ""
    verdict = ("critical hit!" if natural == 20 else "natural 1, miss!" if natural == 1 else
               "hit!" if hit else "miss.")
    line = f"⚔️ {attacker.name} attacks {target.name}{how}: {to_hit.total} ({_plain(to_hit)}) vs AC {ac} — {verdict}"
    if not hit:
        return Outcome(party, (line,), f"{line}\n{state_for_model(party)}")
    notation = double_dice(damage) if natural == 20 else damage
    rolled = dice.roll(notation, rng=rng)
    amount = max(0, rolled.total)
    if target.max_hp is None:
        second = f"🩸 {target.name} takes {amount} damage ({_plain(rolled)}) — HP not tracked"
        return Outcome(party, (line, second), f"{line}\n{second}\n{state_for_model(party)}")
    if amount == 0:
        second = f"🌀 {target.name} takes no damage ({_plain(rolled)}) — {_label(target)}"
        return Outcome(party, (line, second), f"{line}\n{second}\n{state_for_model(party)}")
    outcome = _change(party, target, -amount, [], [], "", shown_damage=f" ({_plain(rolled)})")
    return Outcome(outcome.party, (line, *outcome.lines), f"{line}\n{outcome.result}")


def _need_combat(party: Party) -> Combat:
    if party.combat is None:
        raise RuleError("No combat is running: start_combat first.")
    return party.combat


def _able(party: Party, combatant: Combatant) -> bool:
    return not (combatant.foe and combatant.hp == 0)  # defeated foes are skipped; a downed character is not


def next_turn(party: Party, args: dict[str, Any] | None = None) -> Outcome:
    combat = _need_combat(party)
    turn, round_no = combat.turn, combat.round
    for _ in range(len(combat.order)):
        turn += 1
        if turn == len(combat.order):
            turn, round_no = 0, round_no + 1
        if _able(party, combat.order[turn]):
            break
    combat = replace(combat, turn=turn, round=round_no)
    party = replace(party, combat=combat)
    line = f"➡️ Round {round_no}: {combat.current.name}'s turn"
    return Outcome(party, (line,), f"{line}.\n{state_for_model(party)}")


def end_combat(party: Party, args: dict[str, Any] | None = None) -> Outcome:
    combat = _need_combat(party)
    party = replace(party, combat=None)
    rounds = f"{combat.round} round{'s' if combat.round != 1 else ''}"
    line = f"🏁 The combat is over after {rounds}"
    return Outcome(party, (line,), f"{line}. The foes have left the state.\n{state_for_model(party)}")


TOOLS = {"update_character": update_character, "start_combat": start_combat, "attack": attack,
         "next_turn": next_turn, "end_combat": end_combat}
_ROLLS = {"start_combat", "attack"}


def call_tool(party: Party, name: str, args: dict[str, Any], rng: random.Random | None = None) -> Outcome:
    """Carry out one of the model's state tools. Raises ``RuleError`` (nothing changed) for a bad call."""
    if name not in TOOLS:
        raise RuleError(f"There is no tool named {name!r}.")
    if not isinstance(args, dict):
        raise RuleError(f"{name} needs a JSON object of arguments.")
    return TOOLS[name](party, args, rng) if name in _ROLLS else TOOLS[name](party, args)


# -- a player's own sheet --------------------------------------------------------------------------------------

def set_character(party: Party, player_id: str, player_name: str, *, name: str, role: str | None = None,
                  description: str | None = None, max_hp: int | None = None, ac: int | None = None,
                  initiative_bonus: int | None = None) -> tuple[Party, Character]:
    """/character: create the player's character (at full HP) or update the fields given. Never changes HP in
    play (only keeps it within a new maximum) nor conditions: those are the engine's, on the DM's tools."""
    clean = clean_label(name or "")
    if not clean:
        raise RuleError("Give your character a name (letters or digits, not only symbols).")
    fields = {"max_hp": max_hp, "ac": ac, "initiative_bonus": initiative_bonus}
    ranges = {"max_hp": SHEET_HP_RANGE, "ac": AC_RANGE, "initiative_bonus": BONUS_RANGE}
    for field, value in fields.items():
        if value is not None:
            _int(fields, field, *ranges[field])
    mine = party.character_of(player_id)
    taken = {key(c.name) for c in party.characters if c.player_id != player_id}
    taken |= {key(c.name) for c in party.combat.order if c.foe} if party.combat else set()
    if key(clean) in taken:
        raise RuleError(f"Someone in this adventure is already called {clean}: pick another name.")
    base = mine or Character(player_id, player_name, clean)
    updated = replace(base, player_name=clean_label(player_name) or "a player", name=clean,
                      role=clean_text(role, 60) if role is not None else base.role,
                      description=clean_text(description, 300) if description is not None else base.description,
                      ac=ac if ac is not None else base.ac,
                      initiative_bonus=initiative_bonus if initiative_bonus is not None else base.initiative_bonus)
    if max_hp is not None:
        hp = max_hp if mine is None or base.hp is None else min(base.hp, max_hp)
        updated = replace(updated, max_hp=max_hp, hp=hp)
    party = party.with_character(updated)
    if party.combat and mine is not None and mine.name != clean:
        order = tuple(replace(c, name=clean) if c.player_id == player_id else c for c in party.combat.order)
        party = replace(party, combat=replace(party.combat, order=order))
    what = "made a new character" if mine is None else "changed their sheet"
    note = f"{updated.player_name} {what}: {updated.name}"
    party = replace(party, notes=(*party.notes, note)[-MAX_NOTES:])
    return party, updated
