"""The persistence interface the DM service talks to, and the records it returns.

SQLite (``bot.store.sqlite``) and PostgreSQL (``bot.store.postgres``) implement it with the same SQL, written
once in ``bot.store.sql`` (see there how to add a table and a method to both). ``bot.store.store_for(url)``
picks one from ``[database] url``. All SQL lives behind this interface.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from bot.llm.base import Usage

T = TypeVar("T")
TurnRole = Literal["player", "dm", "roll"]
TurnStatus = Literal["pending", "complete", "failed", "interrupted"]


def turn_ids(player_turn_id: int | Sequence[int] | None) -> list[int]:
    """The player turns a complete/fail call names: none (the opening), one, or a batch's."""
    if player_turn_id is None:
        return []
    return [player_turn_id] if isinstance(player_turn_id, int) else list(player_turn_id)


class SessionExists(Exception):
    """A channel already has an active session."""


def mask_url(url: str) -> str:
    """The URL with its password (if any, also a ``password=`` parameter) replaced by ``***``."""
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


class StoreError(Exception):
    """The database cannot be used (unreachable, corrupt, written by a newer bot, unknown URL scheme): one line
    for the operator, with any password in a URL masked. The CLI prints it and exits with code 2."""


@dataclass(frozen=True, slots=True)
class Channel:
    """Where a session lives. Discord snowflakes are kept as text; the terminal uses its own ids."""

    guild_id: str | None
    channel_id: str


@dataclass(frozen=True, slots=True)
class Player:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    guild_id: str | None
    channel_id: str
    started_by: Player
    premise: str
    status: Literal["active", "ended"]
    created_at: float
    ended_at: float | None = None
    token_limit: int | None = None  # set by an admin; None = the configured tokens_per_session


@dataclass(frozen=True, slots=True)
class Turn:
    id: int
    session_id: int
    seq: int
    role: TurnRole
    author: Player | None
    content: str
    status: TurnStatus
    created_at: float


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One LLM call as billed: the provider-reported usage and the estimated cost (None = unknown price)."""

    provider: str
    model: str
    usage: Usage
    cost_usd: float | None
    estimated: bool = False  # the provider reported no usage: the bot's own estimate was charged


@dataclass(frozen=True, slots=True)
class RollRecord:
    """A roll to keep: who rolled (a player, or the DM for someone), what, for what, and the result."""

    roller: Player
    expression: str
    total: int
    detail: str
    reason: str | None
    summary: str  # the plain sentence the model sees in its history
    by_dm: bool = False


@dataclass(frozen=True, slots=True)
class UsageTotals:
    usage: Usage
    cost_usd: float  # sum of the known costs
    cost_complete: bool  # False when some call had no known price
    calls: int
    estimated_tokens: int = 0  # part of ``usage`` charged from the bot's own estimate (no usage reported)


@dataclass(frozen=True, slots=True)
class TokenCap:
    """One limit a turn's tokens are held against before its LLM call (``bot.dm.guards.TokenBudget`` builds them).

    ``counter`` names a row of token_counters (e.g. ``player:u1:2026-12-01``, ``guild:g1:2026-12``); None means
    the adventure's own usage ledger. ``limit`` 0 = counted but never refused."""

    name: Literal["adventure", "player_day", "server_month"]
    limit: int
    counter: str | None = None
    resets_at: float | None = None  # UNIX time the counter starts again from zero; None = never


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens held for one turn until ``settle_reservation`` charges what the provider reported instead."""

    id: int
    tokens: int


@dataclass(frozen=True, slots=True)
class CapReached:
    """Why a reservation was refused: ``used`` (charged plus held by calls in flight) + ``needed`` > the limit."""

    cap: TokenCap
    used: int
    needed: int


@dataclass(frozen=True, slots=True)
class Pin:
    """A fact a player pinned with /remember. ``number`` is stable: it never changes when another is forgotten."""

    id: int
    session_id: int
    number: int
    author: Player
    text: str
    created_at: float


@dataclass(frozen=True, slots=True)
class SummaryState:
    """An adventure's running summary and its progress marker: the turns with ``seq <= folded_seq`` are in it."""

    session_id: int
    text: str
    folded_seq: int
    updated_at: float


Story = tuple[SummaryState | None, list[Turn], list[Pin]]  # the summary, the complete turns after it, the pins


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a narration request is built from, read together in one snapshot just before a turn: the channel's
    active adventure, its party's state document, and its story (the summary, the complete turns after it, the
    pins; None when not asked for)."""

    session: Session
    party: str | None
    story: Story | None


class Store(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema, and mark turns left pending by a crash as interrupted."""

    async def close(self) -> None: ...

    async def start_session(self, channel: Channel, starter: Player, premise: str) -> Session:
        """Raises ``SessionExists`` when the channel already has an active session."""

    async def active_session(self, channel_id: str) -> Session | None: ...

    async def end_session(self, session_id: int, ended_by: Player) -> None: ...

    async def set_token_limit(self, session_id: int, limit: int | None) -> None:
        """An admin's budget for this session (None: back to the configured default)."""

    async def begin_turn(self, session_id: int, player: Player, text: str) -> int:
        """Store a player's action as ``pending`` before the DM answers; returns its turn id."""

    async def complete_turn(
        self,
        session_id: int,
        player_turn_id: int | Sequence[int] | None,
        dm_text: str,
        calls: list[CallRecord],
        rolls: list[RollRecord],
    ) -> int:
        """In one transaction: the player's turn (or the turns of a batch of actions) becomes complete, the DM's
        rolls and answer are stored after it, and every LLM call is added to the usage ledger. Returns the DM
        turn id."""

    async def fail_turn(
        self, session_id: int, player_turn_id: int | Sequence[int] | None, calls: list[CallRecord], *,
        interrupted: bool = False, rolls: list[RollRecord] = (),
    ) -> None:
        """In one transaction: the player's turn (or a batch's turns) is marked failed (or interrupted: the turn was cancelled) —
        kept, never sent to the model again — whatever usage was reported is charged, and the DM rolls that
        were already shown are kept (with the turn's status: made, but not part of the story)."""

    async def add_roll(self, channel: Channel, session_id: int | None, roll: RollRecord, *,
                       held: bool = False) -> bool:
        """Keep a player's roll; inside an active session it also becomes a turn the DM sees next time.

        ``held``: a DM turn is running, so the roll enters the story after that turn's answer — it is kept at
        once, as a pending roll turn, and ``release_held_rolls`` (or the turn's own complete/fail) moves it
        after the answer. Returns whether the roll joined the session (False once the session has ended)."""

    async def release_held_rolls(self, session_id: int) -> None:
        """Held rolls join the story now, after everything stored so far, in the order they were made."""

    async def count_turns(self, session_id: int) -> int:
        """How many complete turns the session has (what the history window is cut from)."""

    async def turns(self, session_id: int, offset: int = 0) -> list[Turn]:
        """The session's complete turns in order, skipping the first ``offset``."""

    async def usage_totals(self, session_id: int) -> UsageTotals: ...

    async def reserve_tokens(
        self, session_id: int, tokens: int, caps: list[TokenCap], *, now: float, adding_to: Reservation | None = None
    ) -> Reservation | CapReached:
        """Atomically, across processes: check every cap (charged + held + ``tokens``) and hold ``tokens`` against
        all of them, or hold nothing and say which cap is reached. ``adding_to`` grows an existing hold."""

    async def settle_reservation(self, reservation: Reservation, used_tokens: int) -> None:
        """Release the hold and charge the counters ``used_tokens`` (what the provider reported)."""

    async def get_meta(self, key: str) -> str | None: ...

    def turn_lock(self, session_id: int) -> AbstractAsyncContextManager[None]:
        """Held around a turn's LLM call and writes: one turn at a time per session, in every process sharing
        the database, and never left behind by a process that dies (bot/store/turnlock.py)."""

    async def set_meta(self, key: str, value: str) -> None: ...

    # -- the party's state (the rules engine) ---------------------------------------------------------------

    async def party_state(self, session_id: int) -> str | None:
        """The adventure's party document (JSON written by ``bot.dm.rules``), None before the first change."""

    async def change_party_state(
        self, session_id: int, turn_id: int | None, apply: Callable[[str | None], tuple[str, list[str], T]]
    ) -> T:
        """One transaction: ``apply(old document) -> (new document, lines, value)``; the document and the lines
        (kept with ``turn_id``) are written, and ``value`` returned. Nothing is written if ``apply`` raises."""

    async def state_changes(self, session_id: int) -> list[tuple[int | None, str]]: ...

    # -- campaign memory (bot/dm/memory) --------------------------------------------------------------------

    async def count_story_turns(self, session_id: int) -> int:
        """Complete turns that are actions or answers (rolls excluded): what the memory window counts."""

    async def story_turn_seq(self, session_id: int, index: int) -> int | None:
        """The ``seq`` of the complete action/answer number ``index`` (0-based), or None past the end."""

    async def turns_after(self, session_id: int, seq: int, limit: int | None = None) -> list[Turn]:
        """Complete turns with ``seq`` greater than ``seq``, in order (at most ``limit``, the first ones)."""

    async def last_turns(self, session_id: int, count: int) -> list[Turn]:
        """The last ``count`` complete turns, in order."""

    async def summary(self, session_id: int) -> SummaryState | None: ...

    async def story_context(self, session_id: int) -> Story:
        """The summary, the complete turns after it (all of them when there is none) and the pins, in one read."""

    async def turn_context(self, channel_id: str, *, story: bool = True) -> TurnContext | None:
        """The channel's active adventure (None: there is none) with its party's state and, with ``story``, what
        ``story_context`` reads: one read and one snapshot, since they stand before every narration request
        (on SQLite each read is a round trip through the event loop, bench figure 1)."""

    async def save_summary(self, session_id: int, text: str, folded_seq: int, calls: list[CallRecord]) -> None:
        """In one transaction: the new summary and its marker, and the calls that wrote it in the ledger."""

    async def charge_calls(self, session_id: int, calls: list[CallRecord]) -> None:
        """Charge calls that produced nothing to keep (a summary that failed)."""

    async def pins(self, session_id: int) -> list[Pin]: ...

    async def add_pin(self, session_id: int, author: Player, text: str, limit: int) -> Pin | None:
        """Pin a fact under the next number; None (nothing stored) when ``limit`` pins are already there."""

    async def remove_pin(self, session_id: int, number: int) -> None: ...

