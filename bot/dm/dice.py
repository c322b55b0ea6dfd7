"""The dice engine: d20 notation in, a ``RollResult`` or a ``DiceError`` with a user-facing sentence out.

Built on ``d20`` (Avrae's engine). Everything a player or the model types goes through ``roll()``, so it must
never hang, crash or break Discord formatting: inputs are bounded before parsing, d20's quadratic set
operators are replaced by linear ones, and every failure becomes a ``DiceError``. No discord import here.
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

from bot.dm.prompts import quoted

with warnings.catch_warnings():
    # d20 depends on the old `lark-parser`, whose import touches modules deprecated in Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import d20
    from d20 import diceast, expression

__all__ = ["DiceError", "RollResult", "roll", "MAX_NOTATION_LENGTH", "MAX_DICE", "MAX_SIDES"]

MAX_NOTATION_LENGTH = 200  # a /roll option, not a program; also bounds every literal to < 200 digits
MAX_PAREN_DEPTH = 20  # real rolls use 2-3; d20 evaluates recursively and has no guard of its own
MAX_TREE_DEPTH = 128  # chains like "-----1" nest without parentheses; ~3 stack frames per level
MAX_DICE = 1000  # d20's own cap per roll (rerolls and explosions count)
MAX_SIDES = 10_000  # the largest die in print (d10000 wild-magic tables); keeps each die at <= 5 digits
MAX_WORK = 10_000  # dice looked at by keep/reroll/explode selectors in one roll (~10-20 ms at worst)
SELECTOR_COST = 10  # one selector call costs about as much as looking at 10 dice ("1d2e1e2e1e2…" calls many)
MAX_DETAIL = 300  # characters of breakdown; the total is always kept
MAX_REASON = 100
MAX_NAME = 64
EXAMPLES = "try 1d20+5 or 4d6kh3"
TOO_MANY_DICE = f"Too many dice: at most {MAX_DICE:,} in one roll, counting rerolls and explosions."
TOO_DEEP = "That roll is nested too deeply: use fewer signs, operators or parentheses."

Advantage = Literal["advantage", "disadvantage"]
_ADVANTAGE_WORDS = {"advantage": "advantage", "adv": "advantage", "disadvantage": "disadvantage",
                    "dis": "disadvantage", "none": None, "normal": None, "": None}
_ADV_TYPE = {"advantage": d20.AdvType.ADV, "disadvantage": d20.AdvType.DIS, None: d20.AdvType.NONE}
_TRAILING_ADV = re.compile(r"(?:^|(?<=[\s\d)\]%]))(advantage|adv|disadvantage|dis)\s*$")
_ANNOTATION = re.compile(r"(\[[^\]]*\])")  # the grammar's ANNOTATION: \[.*?\]
_UNSAFE = re.compile(r"[`*_~|\\<>\[\]]")  # Discord markdown, spoilers, masked links, mentions
_UNSAFE_ANNOTATION = re.compile(r"[^\w '.,!?/+&-]|_")


class DiceError(ValueError):
    """A roll that cannot be made. ``str(err)`` is a short sentence fit to show a user or the model."""


@dataclass(frozen=True, slots=True)
class RollResult:
    expression: str  # the notation as rolled: normalized, advantage applied ("2d20kh1+5")
    total: int
    detail: str  # d20's markdown breakdown, shortened to MAX_DETAIL but always ending "= `total`"
    advantage: Advantage | None
    reason: str | None
    critical: Literal["success", "failure"] | None  # natural 20 / 1 on the kept die of the only d20 roll

    def markdown(self, who: str) -> str:
        """One line for Discord or a terminal, total last and bold."""
        adv = f" with {self.advantage}" if self.advantage else ""
        why = f" for *{self.reason}*" if self.reason else ""
        crit = f" · critical {self.critical}!" if self.critical else ""
        return f"🎲 **{_clean(who, MAX_NAME) or 'Someone'}** rolls `{self.expression}`{adv}{why}: " \
               f"{self.detail} → **{self.total}**{crit}"

    def summary(self, who: str) -> str:
        """Plain text for the model: no markdown, dropped dice named as such."""
        adv = f" with {self.advantage}" if self.advantage else ""
        why = f" for {quoted(self.reason)}" if self.reason else ""  # the player's words, inert
        crit = f"; natural {20 if self.critical == 'success' else 1}: critical {self.critical}" \
            if self.critical else ""
        plain = re.sub(r"~~(.*?)~~", r"\1 dropped", self.detail).replace("**", "").replace("`", "")
        return f"{_clean(who, MAX_NAME) or 'Someone'} rolled {self.expression}{adv}{why}: " \
               f"{plain} (total {self.total}{crit})"


def roll(notation: str, *, advantage: str | None = None, reason: str | None = None,
         rng: random.Random | None = None) -> RollResult:
    """Roll ``notation`` (full d20 syntax, optionally ending in ``adv``/``dis``). Raises ``DiceError``."""
    adv = _advantage_argument(advantage)
    text = _prepare(notation)
    text, written = _split_advantage_word(text)
    if written and adv and written != adv:
        raise DiceError("Both advantage and disadvantage were asked for: pick one (they cancel out, so roll 1d20).")
    adv = adv or written
    tree = _parse(text)
    first = d20.utils.leftmost(tree)  # d20's AdvType turns exactly this node into 2d20kh1/kl1, or silently nothing
    if adv and not (isinstance(first, diceast.Dice) and first.num == 1 and first.size == 20):
        raise DiceError(f"{adv.capitalize()} needs the roll to start with a single d20, like 1d20+5.")
    roller = _Roller(_Budget(MAX_DICE))  # one per roll: d20's Roller keeps per-roll state, so sharing one is unsafe
    tree = d20.utils.ast_adv_copy(tree, _ADV_TYPE[adv])
    token = _rng_override.set(rng)
    try:
        result = roller.roll(tree)
        total = result.total
        detail = _shorten(result.result)
        str(total)  # Python refuses str() of ints over 4300 digits; find out here, not in a face
        critical = _critical(result.expr)
        expr_text = "".join(part if part.startswith("[") else "".join(part.split())  # "1d20 + 5" -> "1d20+5"
                            for part in _ANNOTATION.split(str(tree)))
    except d20.TooManyRolls:
        raise DiceError(TOO_MANY_DICE) from None
    except _TooMuchWork:
        raise DiceError("That roll needs too many rerolls or explosions to finish: use fewer dice.") from None
    except d20.RollValueError as error:
        if "divide by zero" in str(error):
            raise DiceError("Can't divide by zero in a roll.") from None
        raise DiceError(f"That roll can't be made: {EXAMPLES}.") from None
    except RecursionError:
        raise DiceError(TOO_DEEP) from None
    except (OverflowError, ValueError):  # int(inf), int(nan), int-to-str digit limit
        raise DiceError("That roll's result is too large to show.") from None
    finally:
        _rng_override.reset(token)
    return RollResult(expr_text, total, detail, adv, _clean(reason, MAX_REASON) or None, critical)


# ----- input ---------------------------------------------------------------------------------------------------

def _advantage_argument(advantage: str | None) -> Advantage | None:
    if advantage is None:
        return None
    word = advantage.strip().lower() if isinstance(advantage, str) else "?"
    if word not in _ADVANTAGE_WORDS:
        raise DiceError("Advantage must be 'advantage' or 'disadvantage' (or left out).")
    return _ADVANTAGE_WORDS[word]


def _prepare(notation: str) -> str:
    """Bound the text, collapse whitespace, lowercase outside [annotations] (phones type 1D20)."""
    if not isinstance(notation, str):
        raise DiceError(f"Dice notation must be text: {EXAMPLES}.")
    text = notation.strip()
    if not text:
        raise DiceError(f"No dice given: {EXAMPLES}.")
    if len(text) > MAX_NOTATION_LENGTH:
        raise DiceError(f"That roll is too long: at most {MAX_NOTATION_LENGTH} characters.")
    text = " ".join(text.split())
    parts = _ANNOTATION.split(text)
    depth = deepest = 0
    for i in range(0, len(parts), 2):  # even parts are outside annotations
        parts[i] = parts[i].lower()
        for ch in parts[i]:
            depth += (ch == "(") - (ch == ")")
            deepest = max(deepest, depth)
    if deepest > MAX_PAREN_DEPTH:  # checked before parsing: d20 recurses once per level
        raise DiceError(f"Too many nested parentheses: at most {MAX_PAREN_DEPTH} levels.")
    return "".join(parts)


def _split_advantage_word(text: str) -> tuple[str, Advantage | None]:
    """d20 reads "1d20 adv" as a syntax error, so a trailing adv/dis word is taken off here."""
    match = _TRAILING_ADV.search(text)
    if not match:
        return text, None
    rest = text[:match.start()].strip()
    if not rest:
        raise DiceError(f"Advantage needs a roll to apply to, like 1d20+5 {match.group(1)}.")
    return rest, _ADVANTAGE_WORDS[match.group(1)]


@functools.lru_cache(maxsize=512)  # players repeat their rolls; a tree is never changed after this
def _parse(text: str) -> diceast.Expression:
    try:
        tree = d20.Roller().parse(text)
    except d20.RollSyntaxError as error:
        if not str(error.got):  # the parser reached the end still wanting more
            raise DiceError(f'"{_clean(text, 40)}" is unfinished: {EXAMPLES}.') from None
        start = max(error.col - 1, 0)
        near = _clean(text[start:start + 12].split(" ")[0], 12)
        where = f'near "{near}"' if near else f"at character {error.col}"
        raise DiceError(f"Unknown dice syntax {where}: {EXAMPLES}.") from None
    except ValueError:  # lark turns a literal of 4300+ digits into int() and Python refuses
        raise DiceError("A number in that roll is too large.") from None
    _check(tree)
    return tree


def _check(tree: diceast.Expression) -> None:
    """Reject what d20 would fail on late, slowly or with an internal message; tidy annotations."""
    dice = 0
    stack = [(tree, 1)]
    while stack:  # iterative: the tree may be deep, which is what is being checked
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise DiceError(TOO_DEEP)
        if isinstance(node, diceast.Dice):
            dice += node.num
            if node.size == 0:
                raise DiceError("A die needs at least one side: d0 can't be rolled.")
            if node.size != "%" and node.size > MAX_SIDES:
                raise DiceError(f"Dice can have at most {MAX_SIDES:,} sides.")
        if isinstance(node, diceast.OperatedSet):
            for op in node.operations:
                if op.op in ("mi", "ma") and op.sels[-1].cat is not None:
                    raise DiceError(f"{op.op} takes a plain number, like 4d6{op.op}2.")
        if isinstance(node, diceast.AnnotatedNumber):  # shown in Discord and sent to the model
            node.annotations = [f"[{' '.join(_UNSAFE_ANNOTATION.sub(' ', a[1:-1]).split())}]"
                                for a in node.annotations]
        stack.extend((child, depth + 1) for child in node.children)
    if dice > MAX_DICE:
        raise DiceError(TOO_MANY_DICE)


def _clean(text: str | None, cap: int) -> str:
    """One line without markdown or invisible control characters, at most ``cap`` characters."""
    if not text:
        return ""
    text = "".join(ch for ch in " ".join(str(text).split()) if unicodedata.category(ch)[0] != "C")
    text = " ".join(_UNSAFE.sub("", text).split())
    return text if len(text) <= cap else text[:cap - 1].rstrip() + "…"


# ----- output --------------------------------------------------------------------------------------------------

def _shorten(detail: str) -> str:
    """Cut a long breakdown at a ", " and close any open **, ~~ or ( so the `= total` part renders intact."""
    if len(detail) <= MAX_DETAIL:
        return detail
    body, sep, total = detail.rpartition(" = `")
    room = max(MAX_DETAIL - len(sep + total) - (MAX_PAREN_DEPTH + 8), 0)
    cut = body[:room]
    at_comma = ", " in cut  # cut between dice; else (a long chain like 1+1+…+1) between words
    cut = cut[:max(cut.rfind(", " if at_comma else " "), 0)].rstrip()
    opened: list[str] = []  # closers still owed, innermost last
    for token in re.findall(r"\*\*|~~|[()]", cut):
        if token != "(" and opened and opened[-1] == token:
            opened.pop()
        elif token != ")":
            opened.append(")" if token == "(" else token)
    return f"{cut}{', …' if at_comma else ' …'}{''.join(reversed(opened))}{sep}{total}".lstrip()


def _critical(expr: expression.Expression) -> Literal["success", "failure"] | None:
    """Crits only for a roll with exactly one d20 group that keeps one die (1d20, 2d20kh1 for advantage).

    d20's own ``RollResult.crit`` looks only at the leftmost dice, so it calls 1d20+1d20 a crit.
    """
    groups = []
    stack = [(expr, True)]
    while stack:
        node, kept = stack.pop()
        kept = kept and node.kept  # a d20 dropped by an enclosing set, e.g. (1d20, 5)kh1, does not count
        if isinstance(node, expression.Dice):
            if node.size == 20:
                groups.append((node, kept))
        else:
            stack.extend((child, kept) for child in node.children)
    if len(groups) != 1 or not groups[0][1] or len(groups[0][0].keptset) != 1:
        return None
    face = groups[0][0].keptset[0].total
    return "success" if face == 20 else "failure" if face == 1 else None


# ----- d20 hooks -----------------------------------------------------------------------------------------------

_rng_override: ContextVar[random.Random | None] = ContextVar("dice_rng", default=None)


class _RandomSource:
    """Replaces the ``random`` module inside ``d20.expression`` (installed once, at import). Without an override
    it is the global ``random``, as before, for every caller; the override is a ContextVar, so threads and
    asyncio tasks never see each other's ``rng``."""

    def randrange(self, *args):  # the only function d20 1.1 calls
        rng = _rng_override.get()
        return (random if rng is None else rng).randrange(*args)


if not isinstance(expression.random, _RandomSource):
    expression.random = _RandomSource()


class _TooMuchWork(Exception):
    """Raised inside d20's evaluation; roll() turns it into a DiceError."""


class _Budget(d20.RollContext):
    """d20's dice counter plus a count of dice looked at by selectors, so no roll can run for seconds."""

    def reset(self):  # d20 calls this at the start of every roll
        super().reset()
        self.work = 0

    def charge(self, n: int) -> None:
        self.work += n
        if self.work > MAX_WORK:
            raise _TooMuchWork


class _SetOperator(expression.SetOperator):
    """d20's operator with linear keep/explode (d20's take 0.5 s for 1000d6kh1 and 2.5 s for 1d6e1e2e3e4e5e6)."""

    __slots__ = ("budget",)

    def select(self, target, max_targets=None):
        self.budget.charge(len(self.sels) * (SELECTOR_COST + len(target.keptset)))
        return super().select(target, max_targets)

    def keep(self, target):
        # d20 re-selects once per kept value; selecting once is the same, since dropping a value that was
        # not selected never changes what a selector picks (h/l sorts are stable, the others are per value).
        chosen = self.select(target)
        for value in target.keptset:
            if value not in chosen:
                value.drop()

    def explode(self, target):
        # d20 re-selects over all dice every round. Explosions only add dice and never change old ones, so
        # a number or </> selector can only newly match a die rolled last round; h/l still see the whole set.
        exploded: set = set()
        fresh = self.select(target)
        while fresh:
            start = len(target.values)
            for die in fresh:
                die.explode()
                target.roll_another()
            exploded |= fresh
            new = SimpleNamespace(keptset=[d for d in target.values[start:] if d.kept])  # all a selector reads
            fresh = set()
            for sel in self.sels:
                pool = target if sel.cat in ("h", "l") else new
                self.budget.charge(SELECTOR_COST + len(pool.keptset))
                fresh |= sel.select(pool)
            fresh -= exploded


class _Roller(d20.Roller):
    """d20's Roller building budgeted, linear ``_SetOperator``s instead of d20's own."""

    def _eval_operatedset(self, node):
        target = self._eval(node.value)
        for op in node.operations:
            the_op = _SetOperator(op.op, [expression.SetSelector.from_ast(s) for s in op.sels])
            the_op.budget = self.context
            the_op.operate(target)
            target.operations.append(the_op)
        return target
