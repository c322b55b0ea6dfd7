"""/recap: the story so far as the players read it — the summary, the pinned facts with their numbers, and the
last few turns a line each. Plain text with light markdown; each face escapes what players wrote its own way
(``escape``) and splits it to its message size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.store.base import Pin, Session, Turn

RECENT_TURNS = 6  # the last turns /recap shows, a line each
LINE_CHARS = 160  # of each of those lines


@dataclass(frozen=True, slots=True)
class Recap:
    session: Session
    summary: str  # "" while nothing has been folded yet
    pins: list[Pin]
    recent: list[Turn]
    pending: bool  # some turns have left the window but are not in the summary yet
    summaries: bool = True  # [memory] summaries is on
    window: int = 20  # [dm] history_messages


def _line(text: str, limit: int = LINE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def who(turn: Turn) -> str:
    if turn.role == "dm":
        return "DM"
    if turn.role == "roll":
        return "🎲"
    return turn.author.name if turn.author else "A player"


def recap_text(recap: Recap, *, escape: Callable[[str], str] = lambda text: text, markdown: bool = True) -> str:
    """The recap as text; ``markdown`` False for a terminal (no ** or * around headings and notes)."""
    bold = (lambda text: f"**{text}**") if markdown else (lambda text: text)
    italic = (lambda text: f"*{text}*") if markdown else (lambda text: text)
    parts = [bold("The story so far")]
    if recap.summary:
        parts.append(escape(recap.summary))
    elif not recap.summaries:
        parts.append(italic(f"Summaries are off on this bot: the DM sees the last {recap.window} actions and "
                            "answers, and the pinned facts."))
    else:
        parts.append(italic("Nothing has been summarized yet: the DM still sees every turn of this adventure."))
    if recap.pending:
        parts.append(italic("(The latest turns are being added to the summary.)"))
    if recap.pins:
        lines = [f"#{pin.number} {escape(_line(pin.text, 300))} — {escape(_line(pin.author.name, 40))}"
                 for pin in recap.pins]
        parts.append(bold("Pinned facts") + " (/forget number:<n> removes one)\n" + "\n".join(lines))
    else:
        parts.append(bold("Pinned facts") + ": none yet. /remember fact:<text> pins one the DM always keeps in mind.")
    if recap.recent:
        lines = [f"{bold(escape(_line(who(turn), 40)))}: {escape(_line(turn.content))}" for turn in recap.recent]
        parts.append(bold("Last turns") + "\n" + "\n".join(lines))
    return "\n\n".join(parts)
