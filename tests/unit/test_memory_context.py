"""What one request holds (bot/dm/memory/context.py), on synthetic turns: units, order, fitting, trimming."""

from __future__ import annotations

from bot.dm.guards import estimate_tokens
from bot.dm.memory.context import PINS_HEADER, SUMMARY_HEADER, TRIMMED_ROLLS, Parts, assemble, fit, units_of
from bot.store.base import Pin, Player, Session, Turn

ARIA = Player("u1", "Aria")
SESSION = Session(1, "g", "c", ARIA, "a heist", "active", 0.0)


def turn(seq: int, role: str, text: str) -> Turn:
    return Turn(seq, 1, seq, role, None if role == "dm" else ARIA, text, "complete", 0.0)


def campaign(n: int, *, rolls_before_last: int = 0, size: int = 200) -> list[Turn]:
    turns, seq = [], 0
    for i in range(n):
        seq += 1
        turns.append(turn(seq, "player", f"I do thing {i}. " + "x" * size))
        seq += 1
        turns.append(turn(seq, "dm", f"Answer {i}. " + "y" * size))
    for r in range(rolls_before_last):
        seq += 1
        turns.append(turn(seq, "roll", f"Aria rolled 1d20 → {r}"))
    seq += 1
    turns.append(turn(seq, "player", "The last action."))
    return turns


def parts(turns: list[Turn], *, summary: str = "", pins: list[Pin] = (), volatile: str = "") -> Parts:
    return Parts("system", (), SESSION, summary, list(pins), units_of(turns), omitted=False, max_tokens=100,
                 temperature=None, volatile=volatile)


def test_rolls_travel_with_the_action_they_lead_to():
    units = units_of(campaign(2, rolls_before_last=20))
    assert len(units) == 5
    assert [t.role for t in units[-1]] == ["roll"] * 20 + ["player"]


def test_order_is_system_opening_summary_pins_turns_then_volatile():
    pin = Pin(1, 1, 1, ARIA, "The vault code is 7-4-1.", 0.0)
    request = assemble(parts(campaign(2), summary="KEY FACTS\n- Oswin", pins=[pin], volatile="[party] x"), 0)
    texts = [m.text for m in request.messages]
    assert texts[0].startswith("A new adventure begins.")
    assert texts[1].startswith(SUMMARY_HEADER) and texts[2].startswith(PINS_HEADER)
    assert texts[2].endswith("#1 Aria: The vault code is 7-4-1.")
    assert texts[-1] == "Aria: The last action." and request.volatile == "[party] x"


def test_the_oldest_units_leave_first_in_steps_and_the_last_always_stays():
    p = parts(campaign(40))
    whole = estimate_tokens(assemble(p, 0))
    request = fit(p, whole // 2, 10)
    assert estimate_tokens(request) <= whole // 2
    assert request.messages[-1].text == "Aria: The last action."
    first_shown = request.messages[1].text
    index = int(first_shown.split("thing ")[1].split(".")[0]) * 2 if "thing" in first_shown else None
    assert index is not None and index % 10 == 0  # the start moved in steps of 10 units
    assert "(Earlier turns of this adventure are not shown" in request.messages[0].text
    tiny = fit(p, 1, 10)
    assert [m.text for m in tiny.messages[1:]] == ["Aria: The last action."]


def test_a_last_unit_too_big_alone_sheds_its_oldest_rolls():
    p = parts(campaign(1, rolls_before_last=300))
    alone = estimate_tokens(assemble(p, len(p.units) - 1))
    request = fit(p, alone // 2, 10)
    text = request.messages[-1].text
    assert estimate_tokens(request) <= alone // 2
    assert TRIMMED_ROLLS in request.messages[-2].text + request.messages[-1].text
    assert text.endswith("→ 299\n\nAria: The last action.") and "→ 0\n" not in text
    dropped = 300 - text.count("[dice]")
    assert estimate_tokens(assemble(p, len(p.units) - 1, drop_rolls=dropped - 1)) > alone // 2  # no more than needed
