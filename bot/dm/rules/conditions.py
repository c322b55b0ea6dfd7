"""Conditions: the SRD 5.1 ones (with their one-line rules, shipped in conditions.json) or a short free text.

The data file ships inside the package and is read once at import: nothing is fetched at run time. The text is
the SRD 5.1's (CC-BY-4.0, attribution in the README and in the file itself).
"""

from __future__ import annotations

import json
import re
from importlib import resources

from bot.dm.rules.text import RuleError, clean_text

_DATA = json.loads(resources.files(__package__).joinpath("conditions.json").read_text(encoding="utf-8"))
SRD: dict[str, str] = dict(_DATA["conditions"])
EXHAUSTION: dict[int, str] = {int(level): text for level, text in _DATA["exhaustion"].items()}
SOURCE: str = _DATA["source"]
MAX_FREE_TEXT = 30  # "webbed", "on fire", "hasted": a short note, not a paragraph
MAX_CONDITIONS = 12  # per creature

_EXHAUSTION = re.compile(r"^exhaust(?:ion|ed)(?:\s*(?:level\s*)?(\d+))?$")


def normalize(raw: object) -> str:
    """One condition as the engine keeps it: an SRD name, "exhaustion N" (1–6), or short free text, lower case.
    Raises ``RuleError`` for anything else."""
    if not isinstance(raw, str):
        raise RuleError("Conditions must be strings, e.g. \"poisoned\" or \"exhaustion 2\".")
    text = clean_text(raw, 200).lower()
    if not text:
        raise RuleError("A condition is empty.")
    match = _EXHAUSTION.match(text)
    if match:
        level = int(match.group(1)) if match.group(1) else 0  # 0: one more level than now
        if match.group(1) and not 1 <= level <= 6:
            raise RuleError("Exhaustion goes from level 1 to 6, e.g. \"exhaustion 2\".")
        return f"exhaustion {level}" if level else "exhaustion"
    if text in SRD:
        return text
    if len(text) > MAX_FREE_TEXT:
        raise RuleError(f"The condition {text[:40]!r}… is too long: use an SRD condition (poisoned, prone, …) or "
                        f"at most {MAX_FREE_TEXT} characters.")
    return text


def exhaustion_level(conditions: tuple[str, ...]) -> int:
    for condition in conditions:
        if condition.startswith("exhaustion "):
            return int(condition.split()[1])
    return 0


def add(conditions: tuple[str, ...], condition: str) -> tuple[str, ...]:
    """``conditions`` with one more (kept in the order they were added; exhaustion keeps one level)."""
    if condition.startswith("exhaustion"):
        now = exhaustion_level(conditions)
        level = int(condition.split()[1]) if " " in condition else min(6, now + 1)
        kept = tuple(c for c in conditions if not c.startswith("exhaustion "))
        return (*kept, f"exhaustion {level}")
    if condition in conditions:
        return conditions
    if len(conditions) >= MAX_CONDITIONS:
        raise RuleError(f"At most {MAX_CONDITIONS} conditions at once; remove some first.")
    return (*conditions, condition)


def remove(conditions: tuple[str, ...], condition: str) -> tuple[str, ...]:
    if condition.startswith("exhaustion"):
        return tuple(c for c in conditions if not c.startswith("exhaustion "))
    return tuple(c for c in conditions if c != condition)


def describe(condition: str) -> str | None:
    """The SRD's one line for a condition, or None for free text."""
    if condition.startswith("exhaustion "):
        return f"exhaustion level {condition.split()[1]}: {EXHAUSTION[int(condition.split()[1])]}"
    return f"{condition}: {SRD[condition]}" if condition in SRD else None
