"""The dice engine: d20 semantics, formatting, every limit's message, and that no input hangs or escapes."""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.dm import dice
from bot.dm.dice import DiceError, RollResult, roll

import d20  # after bot.dm.dice, which imports it with lark's DeprecationWarning filtered

TRY = "try 1d20+5 or 4d6kh3"


def totals(notation: str, n: int, seed: int = 1, **kwargs) -> list[int]:
    rng = random.Random(seed)
    return [roll(notation, rng=rng, **kwargs).total for _ in range(n)]


def first_seed(notation: str, predicate, **kwargs) -> RollResult:
    """The first seeded roll that satisfies ``predicate`` (deterministic, so tests can look at rare faces)."""
    for seed in range(5000):
        result = roll(notation, rng=random.Random(seed), **kwargs)
        if predicate(result):
            return result
    raise AssertionError(f"no seed gave the wanted {notation}")


def dice_shown(detail: str) -> list[tuple[str, bool]]:
    """(value, struck) for each die in the first "(…)" group of a breakdown, as a user reads it."""
    inside = re.search(r"\(([^()]*)\)", detail).group(1)
    return [(re.sub(r"[*~!]", "", v), "~~" in v) for v in inside.split(", ")]


def balanced(text: str) -> bool:
    return text.count("**") % 2 == 0 and text.count("~~") % 2 == 0 and text.count("(") == text.count(")")


# ----- distributions (seeded) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("notation, low, high, mean, tolerance", [
    ("1d20", 1, 20, 10.5, 0.5),
    ("2d6", 2, 12, 7.0, 0.3),
    ("4d6kh3", 3, 18, 12.24, 0.35),
    ("1d20 adv", 1, 20, 13.82, 0.5),  # plain 1d20 (10.5) is far outside
    ("1d20 dis", 1, 20, 7.18, 0.5),
])
def test_ranges_and_means(notation, low, high, mean, tolerance):
    sample = totals(notation, 600)
    assert low <= min(sample) and max(sample) <= high and {low, high} & set(sample)
    assert statistics.fmean(sample) == pytest.approx(mean, abs=tolerance)


def test_advantage_is_exactly_2d20_keep_highest_and_disadvantage_keep_lowest():
    for seed in range(100):
        adv = roll("1d20+3", advantage="adv", rng=random.Random(seed))
        written = roll("1d20+3 adv", rng=random.Random(seed))
        plain = roll("2d20kh1+3", rng=random.Random(seed))
        assert adv.total == written.total == plain.total and adv.detail == plain.detail
        assert adv.expression == "2d20kh1+3" and adv.advantage == "advantage" and plain.advantage is None
        dis = roll("1d20+3", advantage="Disadvantage", rng=random.Random(seed))
        assert dis.total == roll("2d20kl1+3", rng=random.Random(seed)).total
        assert dis.expression == "2d20kl1+3" and dis.advantage == "disadvantage"
    again = roll("1d20+3", rng=random.Random(0))  # parsed trees are cached: advantage must not have stuck to it
    assert again.expression == "1d20+3" and len(dice_shown(again.detail)) == 1 and again.advantage is None


def test_reroll_until_never_keeps_a_one():
    rng = random.Random(3)
    struck_ones = 0
    for _ in range(150):
        shown = dice_shown(roll("10d6rr1", rng=rng).detail)
        assert all(value != "1" for value, struck in shown if not struck)
        assert all(value == "1" for value, struck in shown if struck)
        assert len([1 for _, struck in shown if not struck]) == 10
        struck_ones += sum(struck for _, struck in shown)
    assert struck_ones > 150  # the 1s really were rolled and replaced


def test_reroll_once_rerolls_one_time_only():
    only_one = roll("1d1ro1", rng=random.Random(1))  # would loop forever if it rerolled more than once
    assert only_one.total == 1 and dice_shown(only_one.detail) == [("1", True), ("1", False)]
    sample = totals("1d6ro1", 720, seed=4)
    assert 5 < sample.count(1) < 45  # 1/36 of 720 is 20; plain 1d6 would give 120


def test_reroll_and_add_adds_at_most_one_die():
    sample = totals("1d6ra6", 500, seed=5)
    assert set(sample) == set(range(1, 13)) - {6}  # a 6 always adds one more die, and only one


def test_explode_goes_past_the_die_and_never_stops_on_the_exploding_face():
    sample = totals("1d6e6", 600, seed=6)
    assert max(sample) > 12 and 6 not in sample and 12 not in sample
    assert min(sample) == 1


@pytest.mark.parametrize("notation, low, high", [
    ("4d6mi3", 12, 24), ("4d6ma2", 4, 8), ("1d20mi10", 10, 20), ("1d20ma5", 1, 5), ("4d6kl1", 1, 6),
    ("4d6pl1", 3, 18), ("(1d4, 1d6)kh1", 1, 6), ("1d%", 0, 90),
])
def test_bounds(notation, low, high):
    sample = totals(notation, 200, seed=7)
    assert low <= min(sample) and max(sample) <= high
    assert {low, high} & set(sample)  # the bound is a real edge, not a loose guess


def test_min_max_force_values_and_drop_by_value():
    assert set(totals("1d20mi10", 200, seed=8)) == set(range(10, 21))  # 1-9 become 10
    assert set(totals("1d20ma5", 200, seed=8)) == set(range(1, 6))
    assert set(totals("1d6p1", 100, seed=8)) == {0, 2, 3, 4, 5, 6}  # p1 drops ones (pl1 drops the lowest)
    assert set(totals("1d%", 200, seed=8)) == set(range(0, 100, 10))  # d20's d% is the tens die: 0-90


@pytest.mark.parametrize("notation, total", [
    ("2*3+4", 10), ("7//2", 3), ("7/2", 3), ("7%3", 1), ("-3+1", -2), ("(1, 2, 3)kh1", 3), ("(1, 2, 3)pl1", 5),
    ("1d20 >= 1", 1), ("1d6 > 6", 0), ("(10 > 5) + (2 == 2)", 2), ("1d1 [fire] + 2 [cold]", 3), ("0d20", 0),
    ("1.5*3", 4), ("1d10000mi10000", 10000),
])
def test_arithmetic_sets_comparisons_and_annotations(notation, total):
    assert roll(notation).total == total


@pytest.mark.parametrize("notation", ["8d6kh3", "8d6kl2", "8d6k>3", "8d6k<3k6", "8d6p<3", "8d6ph2pl2",
                                      "(1d6, 1d6, 1d6)kh2", "(1d6, 2d4, 3)kl1", "3d6e6", "5d6e>4", "4d6eh1",
                                      "6d6kh3e6", "4d6e6e5", "4d6mi2ma5", "3d6e6kh2"])
def test_linear_keep_and_explode_match_d20_exactly(notation):
    # The engine replaces d20's quadratic keep/explode; the dice drawn and kept must not change.
    for seed in range(20):
        ours = roll(notation, rng=random.Random(seed))
        random.seed(seed)
        theirs = d20.roll(notation)
        assert (ours.total, ours.detail) == (theirs.total, theirs.result)


# ----- formatting ----------------------------------------------------------------------------------------------

def test_the_example_line_and_summary():
    result = first_seed("1d20+5", lambda r: r.total == 25, reason="Stealth")
    assert result.critical == "success"
    assert result.markdown("Aria") == (
        "🎲 **Aria** rolls `1d20+5` for *Stealth*: 1d20 (**20**) + 5 = `25` → **25** · critical success!")
    assert result.summary("Aria") == (
        "Aria rolled 1d20+5 for \"Stealth\": 1d20 (20) + 5 = 25 (total 25; natural 20: critical success)")
    plain = first_seed("1d20+5", lambda r: r.total == 19, reason="Stealth")
    assert plain.critical is None
    assert plain.summary("Aria") == "Aria rolled 1d20+5 for \"Stealth\": 1d20 (14) + 5 = 19 (total 19)"
    assert plain.markdown("Aria").endswith("= `19` → **19**")


def test_markdown_strikes_dropped_dice_and_ends_with_the_total():
    result = roll("4d6kh3", rng=random.Random(8))
    shown = dice_shown(result.detail)
    assert len(shown) == 4 and sum(struck for _, struck in shown) == 1
    dropped = next(int(v) for v, struck in shown if struck)
    assert dropped == min(int(v) for v, _ in shown)
    assert result.total == sum(int(v) for v, _ in shown) - dropped
    assert result.markdown("Bo").endswith(f"→ **{result.total}**")
    assert "dropped" in result.summary("Bo") and not set("*`~") & set(result.summary("Bo"))


def test_advantage_shows_both_dice_and_says_so():
    result = roll("1d20+2", advantage="adv", rng=random.Random(9))
    assert len(dice_shown(result.detail)) == 2 and "~~" in result.detail
    assert "rolls `2d20kh1+2` with advantage" in result.markdown("Aria")
    assert "rolled 2d20kh1+2 with advantage" in result.summary("Aria")


def test_critical_failure_and_crit_with_advantage_uses_the_kept_die():
    assert first_seed("1d20", lambda r: r.total == 1).critical == "failure"
    adv20 = first_seed("1d20", lambda r: r.total == 20, advantage="adv")
    assert adv20.critical == "success" and adv20.markdown("A").endswith("· critical success!")
    # a 20 that was dropped by disadvantage is no crit
    dropped20 = first_seed("1d20", lambda r: "~~**20**~~" in r.detail, advantage="dis")
    assert dropped20.total < 20 and dropped20.critical is None
    assert first_seed("1d20+1d4", lambda r: "1d20 (**20**)" in r.detail).critical == "success"


@pytest.mark.parametrize("notation", ["2d20", "1d20+1d20", "(1d20, 30)kh1", "1d20e20", "3d20"])
def test_no_crit_unless_a_single_kept_d20(notation):
    result = first_seed(notation, lambda r: re.search(r"\*\*20!?\*\*", r.detail))
    assert result.critical is None and "critical" not in result.markdown("A")


def test_long_breakdowns_are_shortened_but_keep_the_total():
    for notation in ["1000d6", "1000d6kh1", "400d6rr1", "1" + "+1" * 99, "(1d4, 1d6)kh1" + "+(1d4, 1d6)kh1" * 13,
                     "20d6mi3" + "+20d6mi3" * 20, "30d20kl1" + "+30d20kl1" * 10]:
        result = roll(notation, rng=random.Random(10))
        assert len(result.detail) <= dice.MAX_DETAIL
        assert result.detail.endswith(f" = `{result.total}`") and "…" in result.detail
        assert balanced(result.detail), result.detail
    assert roll("9" * 199).detail == f"… = `{'9' * 199}`"  # the total wins over the breakdown


def test_reason_who_and_annotations_cannot_break_markdown():
    result = roll("1d6 [fi`re**]", reason="  Sneak `attack`\n**now** ||spoiler|| _x_ [link](http://x) \u202e ")
    assert result.reason == "Sneak attack now spoiler x link(http://x)"
    assert result.expression == "1d6[fi re]" and "[fi re]" in result.detail
    line = result.markdown("**Evil**\nName")
    assert "\n" not in line and line.startswith("🎲 **Evil Name** rolls")
    assert roll("1d6", reason="x" * 500).reason == "x" * 99 + "…"
    assert roll("1d6", reason=" \n ").reason is None and roll("1d6", reason=None).reason is None


def test_notation_is_normalized():
    assert roll(" 1D20  +\n5 ").expression == "1d20+5"
    assert roll("(1d4, 1d6)kh1").expression == "(1d4,1d6)kh1"
    assert roll("1d20+5 ADVANTAGE").expression == "2d20kh1+5"
    assert roll("1d20adv").advantage == "advantage" and roll("1d20 dis").advantage == "disadvantage"


# ----- limits and errors: each with its own message --------------------------------------------------------------

@pytest.mark.parametrize("notation, message", [
    ("", f"No dice given: {TRY}."),
    ("   \n ", f"No dice given: {TRY}."),
    (None, f"Dice notation must be text: {TRY}."),
    ("1+" * 100 + "1", "That roll is too long: at most 200 characters."),
    ("1001d6", "Too many dice: at most 1,000 in one roll, counting rerolls and explosions."),
    ("600d6+401d4", "Too many dice: at most 1,000 in one roll, counting rerolls and explosions."),
    ("600d1rr1", "Too many dice: at most 1,000 in one roll, counting rerolls and explosions."),
    ("1000d1e1", "Too many dice: at most 1,000 in one roll, counting rerolls and explosions."),
    ("1d10001", "Dice can have at most 10,000 sides."),
    ("3d0", "A die needs at least one side: d0 can't be rolled."),
    ("(" * 21 + "1" + ")" * 21, "Too many nested parentheses: at most 20 levels."),
    ("-" * 150 + "1", "That roll is nested too deeply: use fewer signs, operators or parentheses."),
    ("1d6/0", "Can't divide by zero in a roll."),
    ("1d6 % (1d1-1)", "Can't divide by zero in a roll."),
    ("x", f'Unknown dice syntax near "x": {TRY}.'),
    ("1d20+5 stealth check", f'Unknown dice syntax near "stealth": {TRY}.'),
    ("1d20 + 5)", f'Unknown dice syntax near ")": {TRY}.'),
    ("1d20+", f'"1d20+" is unfinished: {TRY}.'),
    ("4d6mih2", "mi takes a plain number, like 4d6mi2."),
    ("500d6rrl1", "That roll needs too many rerolls or explosions to finish: use fewer dice."),
    ("1d1rr1", "That roll needs too many rerolls or explosions to finish: use fewer dice."),
    ("1d2" + "e1e2" * 49, "That roll needs too many rerolls or explosions to finish: use fewer dice."),
    ("adv", "Advantage needs a roll to apply to, like 1d20+5 adv."),
    ("5+1d20 adv", "Advantage needs the roll to start with a single d20, like 1d20+5."),
    ("2d20 dis", "Disadvantage needs the roll to start with a single d20, like 1d20+5."),
    ("1d6 adv", "Advantage needs the roll to start with a single d20, like 1d20+5."),
])
def test_each_problem_has_its_own_message(notation, message):
    with pytest.raises(DiceError) as caught:
        roll(notation)
    assert str(caught.value) == message


def test_advantage_argument_problems():
    with pytest.raises(DiceError, match=r"^Both advantage and disadvantage were asked for: pick one"):
        roll("1d20 dis", advantage="adv")
    for bad in ["sideways", 3, ["adv"]]:
        with pytest.raises(DiceError, match=r"^Advantage must be 'advantage' or 'disadvantage' \(or left out\)\.$"):
            roll("1d20", advantage=bad)
    assert roll("1d20 adv", advantage="advantage").advantage == "advantage"  # saying it twice is fine
    assert roll("1d20", advantage="none").advantage is None


def test_the_largest_allowed_die_and_dice_count_roll():
    assert 1 <= roll("1d10000").total <= 10000
    assert roll("1000d1").total == 1000


def test_numbers_too_large_for_python_are_caught(monkeypatch):
    # Unreachable under the 200-character cap (a product has fewer digits than its text); proven with it raised.
    monkeypatch.setattr(dice, "MAX_NOTATION_LENGTH", 10_000)
    with pytest.raises(DiceError, match=r"^A number in that roll is too large\.$"):
        roll("1" * 5000)
    with pytest.raises(DiceError, match=r"^That roll's result is too large to show\.$"):
        roll("9" * 4000 + "*" + "9" * 4000)


HOSTILE = [
    "1000d2rr<2", "1000d1e1", "1d1e1", "1d6e1e2e3e4e5e6", "1d2" + "e1e2" * 49, "1000d6kh1", "1000d6kh500",
    "1000d6" + "k1" * 97, "1000d6" + "kh1" * 64, "1000d6" + "rr7" * 60, "999d6rrl1", "500d6rrl1", "1d6eh1000",
    "100d2" + "ra2" * 60, "1000d6mi2ma5", "(" * 500 + "1" + ")" * 500, "(" * 99 + "1" + ")" * 99, "-" * 199 + "1",
    "1" + "*9" * 99, "9" * 200, "1d" + "9" * 198, "9" * 196 + "d6", "1" + "+1d1000" * 28, "(1d6," * 66,
    "1d6" + "/(1d1-1)" * 24, "1" + "<1" * 99, "1000d10000", "(" + "1000d6," * 25 + ")kh1", "1d20 " + "adv " * 49,
    "*" * 200, "1" + "*1" * 99, "x" * 10_000_000,
]


@pytest.mark.parametrize("notation", HOSTILE, ids=lambda n: n[:30])
def test_hostile_rolls_finish_fast(notation):
    start = time.perf_counter()
    try:
        roll(notation)
    except DiceError:
        pass
    assert time.perf_counter() - start < 0.5  # a guard against hangs, not a benchmark (target: well under 50 ms)


DICE_TEXT = st.text(alphabet="0123456789d%+-*/<>=!(),. khlpreoaimx[]advis\n", max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), DICE_TEXT), st.sampled_from([None, "adv", "dis", "bogus"]))
def test_any_text_gives_a_result_or_a_dice_error(notation, advantage):
    try:
        result = roll(notation, advantage=advantage, reason=notation, rng=random.Random(0))
    except DiceError as error:
        assert str(error) and "\n" not in str(error) and "Traceback" not in str(error)
        return
    assert isinstance(result.total, int)
    assert "\n" not in result.markdown(notation) and "\n" not in result.summary(notation)
    assert result.detail.endswith(f"`{result.total}`") and balanced(result.detail)


# ----- seeding ---------------------------------------------------------------------------------------------------

def test_rng_makes_rolls_reproducible_and_leaves_other_callers_alone():
    assert roll("10d20", rng=random.Random(42)) == roll("10d20", rng=random.Random(42))
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    roll("10d20", rng=random.Random(1))
    assert [random.random() for _ in range(3)] == expected  # the global generator was not touched
    random.seed(7)
    face = random.randrange(20) + 1
    random.seed(7)
    assert d20.roll("1d20").total == face  # d20's own callers still draw from the global generator


def test_rng_is_released_even_when_the_roll_fails():
    with pytest.raises(DiceError):
        roll("1d6/0", rng=random.Random(1))
    random.seed(99)
    first = roll("5d20").detail
    random.seed(99)
    assert roll("5d20").detail == first  # back on the global generator, not the failed roll's rng


def test_module_stays_free_of_discord_and_imports_without_warnings():
    source = Path(dice.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+discord", source, re.M)
    code = "import bot.dm.dice"
    run = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                         text=True, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr
