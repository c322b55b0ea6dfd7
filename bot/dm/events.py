"""What the DM service yields while it runs a turn. Faces (Discord, terminal) turn these into output.

A turn's stream is: any number of ``TextDelta``/``Reset``/``Retrying``/``RollMade``/``UsageReport`` events (after a
``Batched`` and/or ``AnswersBatch`` when actions are batched), then exactly one ``Done`` or one ``Failed``. A refusal (no session, rate limit, budget, …) is a turn whose only event is
``Failed``: nothing was shown and no LLM call was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bot.llm.base import Usage

if TYPE_CHECKING:
    from bot.dm.dice import RollResult


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More narration, to be appended to what is shown."""

    text: str


@dataclass(frozen=True, slots=True)
class Reset:
    """Discard the text shown since the turn started or since the last ``RollMade``.

    Emitted before a retry that follows partial text, so a user never sees two half answers glued together.
    """


@dataclass(frozen=True, slots=True)
class RollMade:
    """The engine rolled dice for the DM (the model called the ``roll_dice`` tool).

    Show it as its own clearly marked line. It is a checkpoint: a later ``Reset`` never removes it or anything
    shown before it.
    """

    roll: RollResult
    for_whom: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Tokens charged for one LLM call (as the provider reported them) and their estimated cost."""

    usage: Usage
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Retrying:
    """An LLM call failed and is about to be tried again (``attempt`` of ``attempts``): tell the players why
    they wait. Transient: the next text, or the end of the turn, replaces it."""

    attempt: int
    attempts: int
    reason: str


@dataclass(eq=False)
class BatchTicket:
    """One batched turn: the players whose actions it answers, in arrival order, and where the answer is shown
    once a face shows it (``shown_at``: that face's own locator, such as a message link; None if unknown)."""

    players: list  # list[Player]
    shown_at: str | None = None


@dataclass(frozen=True, slots=True)
class Batched:
    """The player's action is in and will be answered together with others' in the next turn (``position`` 1
    is the batch's first action, whose stream shows the answer; the others' streams end with ``Done`` or
    ``Failed`` when that answer ends)."""

    ticket: BatchTicket
    position: int
    text: str


@dataclass(frozen=True, slots=True)
class AnswersBatch:
    """This turn answers several players' actions (``ticket.players``): a face that shows it may say where in
    ``ticket.shown_at``, before the turn's text starts, so the other players' responses can point to it."""

    ticket: BatchTicket


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str


FailureKind = Literal[
    "no_session",  # nothing to act in: /start first
    "session_active",  # /start where a session already runs
    "rate_limited",  # too many turns in this channel; retry_after says when
    "budget",  # the session's token budget is spent
    "busy",  # too many turns already waiting in this channel
    "invalid",  # bad input (empty action, too long, bad dice)
    "retry_later",  # the provider asked us to wait longer than we may; retry_after says when
    "unavailable",  # the provider kept failing after every retry
    "rejected",  # the provider refused the request (400/401/403/404, quota): retrying cannot help
    "internal",  # a bug of ours, or the store failing; logged
    "empty",  # the model answered with neither text nor a roll: nothing was stored as an answer
    "unsaved",  # the answer was shown but could not be stored: the turn is kept as interrupted
    "stopping",  # the bot is shutting down
]


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn ended without an answer. ``message`` is short and safe to show the user."""

    kind: FailureKind
    message: str
    retry_after: float | None = None


DMEvent = TextDelta | Reset | Retrying | RollMade | UsageReport | Batched | AnswersBatch | Done | Failed
