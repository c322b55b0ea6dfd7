"""The persistence interface the DM service talks to, and the records it returns.

SQLite (``bot.store.sqlite``) implements it now; a PostgreSQL store can implement the same methods later
without the DM service changing. All SQL lives behind this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bot.llm.base import Usage

TurnRole = Literal["player", "dm", "roll"]
TurnStatus = Literal["pending", "complete", "failed", "interrupted"]


class SessionExists(Exception):
    """A channel already has an active session."""


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
        player_turn_id: int | None,
        dm_text: str,
        calls: list[CallRecord],
        rolls: list[RollRecord],
    ) -> int:
        """In one transaction: the player's turn becomes complete, the DM's rolls and answer are stored after
        it, and every LLM call is added to the usage ledger. Returns the DM turn id."""

    async def fail_turn(
        self, session_id: int, player_turn_id: int | None, calls: list[CallRecord], *, interrupted: bool = False
    ) -> None:
        """In one transaction: the player's turn is marked failed (or interrupted: the turn was cancelled) —
        kept, never sent to the model again — and whatever usage was reported is charged."""

    async def add_roll(self, channel: Channel, session_id: int | None, roll: RollRecord) -> None:
        """Keep a player's roll; inside a session it also becomes a turn the DM sees next time."""

    async def count_turns(self, session_id: int) -> int:
        """How many complete turns the session has (what the history window is cut from)."""

    async def turns(self, session_id: int, offset: int = 0) -> list[Turn]:
        """The session's complete turns in order, skipping the first ``offset``."""

    async def usage_totals(self, session_id: int) -> UsageTotals: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...

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

    async def save_summary(self, session_id: int, text: str, folded_seq: int, calls: list[CallRecord]) -> None:
        """In one transaction: the new summary and its marker, and the calls that wrote it in the ledger."""

    async def charge_calls(self, session_id: int, calls: list[CallRecord]) -> None:
        """Charge calls that produced nothing to keep (a summary that failed)."""

    async def pins(self, session_id: int) -> list[Pin]: ...

    async def add_pin(self, session_id: int, author: Player, text: str, limit: int) -> Pin | None:
        """Pin a fact under the next number; None (nothing stored) when ``limit`` pins are already there."""

    async def remove_pin(self, session_id: int, number: int) -> None: ...

