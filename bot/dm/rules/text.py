"""The engine's own error, and how players' and the model's words are made safe to store and to show the model.

A character's name, role and description are the players' text, and a foe's name the model's: in what the model
reads they must never start a line, open a ``[dice]``/``[party]`` block or pose as a speaker. So every such text
is one line, without square brackets, backticks or markup, and bounded.
"""

from __future__ import annotations

import re

from bot.dm.prompts import untrusted

_UNSAFE = re.compile(r"[\[\]`*_|<>\\~#@]")


class RuleError(ValueError):
    """A tool call or a command the rules refuse. ``str(err)`` is one short sentence for the model or a player;
    nothing was changed."""


def clean_text(text: str, limit: int) -> str:
    """One line, no markup or brackets, at most ``limit`` characters. First what the model may read of any
    player's text (``untrusted``: line breaks and invisible characters folded, look-alike brackets too)."""
    text = _UNSAFE.sub(" ", untrusted(text)).replace('"', "'")  # the model's block quotes players' words in "…"
    return " ".join(text.split())[:limit].strip()


def clean_label(text: str, limit: int = 40) -> str:
    """A name: like ``clean_text`` and also without the colon that makes "Name: text" a speaker's line, nor the
    parentheses the engine's lines put after a name."""
    return clean_text(re.sub(r"[:()]", " ", untrusted(text)), limit)  # as prompts.clean_name: no "(…)" either


def key(name: str) -> str:
    """How names are compared: case and spacing do not matter."""
    return " ".join(name.casefold().split())
