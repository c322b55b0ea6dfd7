"""The engine's own error, and how players' and the model's words are made safe to store and to show the model.

A character's name, role and description are the players' text, and a foe's name the model's: in what the model
reads they must never start a line, open a ``[dice]``/``[party]`` block or pose as a speaker. So every such text
is one line, without square brackets, backticks or markup, and bounded.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\[\]`*_|<>\\~#@]")


class RuleError(ValueError):
    """A tool call or a command the rules refuse. ``str(err)`` is one short sentence for the model or a player;
    nothing was changed."""


def clean_text(text: str, limit: int) -> str:
    """One line, no markup or brackets, at most ``limit`` characters."""
    text = _UNSAFE.sub(" ", text).replace('"', "'")  # the model's block quotes players' words in "…"
    return " ".join(text.split())[:limit].strip()


def clean_label(text: str, limit: int = 40) -> str:
    """A name: like ``clean_text`` and also without the colon that makes "Name: text" a speaker's line."""
    return clean_text(text.replace(":", " "), limit)


def key(name: str) -> str:
    """How names are compared: case and spacing do not matter."""
    return " ".join(name.casefold().split())
