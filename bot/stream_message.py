"""One Discord message of a streamed answer, as the MessageStreamer sees it: a span of the answer's text and what
Discord shows of it (shared by bot/discord_stream.py and bot/discord_stream_faults.py)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.message_sink import MessageRef
from bot.message_text import FENCE

ORIGINAL, FOLLOWUP, CHANNEL = "original", "followup", "channel"


@dataclass(eq=False)
class _Msg:
    """A message's span over the text (``start``..``end``) and its state on Discord."""
    kind: str  # ORIGINAL / FOLLOWUP (both die with the token) or CHANNEL (bot token)
    start: int  # offset in the text where this message's span begins
    inside: bool = False  # a code fence is open at `start` (so we reopen it)
    lang: str = ""
    end: int | None = None  # where the span was split off; None while it is the open, growing message
    ref: MessageRef = None
    created: bool = False
    shown: str | None = None  # what Discord shows (None: nothing of ours yet)
    shown_end: int = 0  # text offset the shown content reaches
    frozen: bool = False  # can no longer be edited (token died, or we gave up on it)
    dropped: bool = False  # removed by reset(); to be deleted
    last_start: float = float("-inf")  # clock time the last call for this message started
    hold_until: float = float("-inf")  # no call before this (backoff after an error, Retry-After)
    failures: int = 0
    limited: int = 0

    @property
    def prefix(self) -> str:
        return f"{FENCE}{self.lang}\n" if self.inside else ""
