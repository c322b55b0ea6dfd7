"""SQL for server admins (issue 11): per-server settings (/config) and a month of the usage ledger (/usage).

A mixin of ``SQLiteStore`` so that these queries live apart from the turn path's. Who a call is charged to:
the usage ledger links each call to a turn — the player's own turn when the turn failed, the DM's answer when
it completed (then the player is the one whose action came just before it in the session), or no turn (an
adventure's opening that failed, or a background call): those are charged to whoever started the adventure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

DAY = 86_400  # seconds; the days are UTC days when ``since`` is a UTC midnight
SETTING_COLUMNS = ("persona", "content_rating", "adventure_budget", "monthly_budget", "player_daily_budget")


@dataclass(frozen=True, slots=True)
class SpendLine:
    """Tokens and estimated cost of one channel, player or day; ``cost_complete`` is False when some call's
    model had no known price."""

    key: str
    name: str
    tokens: int
    cost_usd: float
    cost_complete: bool
    calls: int


# The player behind a usage row (u): its turn (t) when that is the player's own (a failed action), else the
# session's last player turn before the DM's answer (turns of one channel run in order; one seek on
# turns_by_role), else whoever started the session (s). The player's turn is joined as p.
_PLAYER_JOIN = """LEFT JOIN turns p ON p.id = CASE
    WHEN t.role = 'player' THEN t.id
    WHEN t.role = 'dm' THEN (SELECT x.id FROM turns x WHERE x.session_id = t.session_id AND x.role = 'player'
                             AND x.seq < t.seq ORDER BY x.seq DESC LIMIT 1)
    END"""
_TOKENS = "u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens"
_JOINS = "FROM usage u JOIN sessions s ON s.id = u.session_id LEFT JOIN turns t ON t.id = u.turn_id"
_WHERE = " WHERE s.guild_id = ? AND u.created_at >= ? AND u.created_at < ?"
_FROM = _JOINS + _WHERE
_SUMS = f"SUM({_TOKENS}), COALESCE(SUM(u.cost_usd), 0), COUNT(*) - COUNT(u.cost_usd), COUNT(*)"


def _line(key: Any, name: Any, row: tuple) -> SpendLine:
    tokens, cost, unknown, calls = row
    return SpendLine(str(key), str(name), int(tokens or 0), float(cost or 0), int(unknown or 0) == 0, int(calls))


class AdminStore(Protocol):
    """What the admin side needs of a store (a PostgreSQL store implements the same methods)."""

    async def guild_settings(self, guild_id: str) -> dict[str, Any]: ...
    async def set_guild_settings(self, guild_id: str, changes: dict[str, Any], by_id: str) -> None: ...
    async def guild_usage_total(self, guild_id: str, since: float, until: float) -> SpendLine: ...
    async def guild_usage_by_channel(self, guild_id: str, since: float, until: float,
                                     limit: int = 10) -> list[SpendLine]: ...
    async def guild_usage_by_player(self, guild_id: str, since: float, until: float,
                                    limit: int = 10) -> list[SpendLine]: ...
    async def guild_usage_daily(self, guild_id: str, since: float, until: float) -> dict[int, int]: ...
    async def count_active_sessions(self) -> int: ...


class AdminQueries:
    """Per-server settings and usage reports, in SQL common to SQLite and PostgreSQL (``?`` placeholders, no
    dialect-only functions), over the shared store's ``_rows`` and ``_execute`` (bot/store/sql.py)."""

    # -- per-server settings --------------------------------------------------------------------------------

    async def guild_settings(self: Any, guild_id: str) -> dict[str, Any]:
        """The server's stored overrides (only the settings it set; {} when none)."""
        rows = await self._rows(
            f"SELECT {', '.join(SETTING_COLUMNS)} FROM guild_settings WHERE guild_id = ?", guild_id)
        if not rows:
            return {}
        return {name: value for name, value in zip(SETTING_COLUMNS, rows[0]) if value is not None}

    async def set_guild_settings(self: Any, guild_id: str, changes: dict[str, Any], by_id: str) -> None:
        """Store the given settings for the server (others keep their stored value or default)."""
        unknown = set(changes) - set(SETTING_COLUMNS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        if not changes:
            return
        names = list(changes)
        await self._execute(
            f"INSERT INTO guild_settings (guild_id, {', '.join(names)}, updated_at, updated_by_id)"
            f" VALUES (?, {', '.join('?' for _ in names)}, ?, ?) ON CONFLICT (guild_id) DO UPDATE SET "
            + ", ".join(f"{n} = excluded.{n}" for n in names)
            + ", updated_at = excluded.updated_at, updated_by_id = excluded.updated_by_id",
            guild_id, *(changes[n] for n in names), time.time(), by_id,
        )

    # -- usage reports --------------------------------------------------------------------------------------

    async def guild_usage_total(self: Any, guild_id: str, since: float, until: float) -> SpendLine:
        rows = await self._rows(f"SELECT {_SUMS} {_FROM}", guild_id, since, until)
        return _line(guild_id, "total", rows[0])

    async def guild_usage_by_channel(self: Any, guild_id: str, since: float, until: float,
                                     limit: int = 10) -> list[SpendLine]:
        rows = await self._rows(
            f"SELECT s.channel_id, {_SUMS} {_FROM} GROUP BY s.channel_id ORDER BY 2 DESC, s.channel_id LIMIT ?",
            guild_id, since, until, limit)
        return [_line(row[0], row[0], row[1:]) for row in rows]

    async def guild_usage_by_player(self: Any, guild_id: str, since: float, until: float,
                                    limit: int = 10) -> list[SpendLine]:
        rows = await self._rows(
            f"SELECT player_id, MAX(player_name), SUM(tokens), SUM(cost), SUM(unknown), COUNT(*) FROM ("
            " SELECT COALESCE(p.author_id, s.started_by_id) AS player_id,"
            " COALESCE(p.author_name, s.started_by_name) AS player_name,"
            f" {_TOKENS} AS tokens, COALESCE(u.cost_usd, 0) AS cost,"
            f" CASE WHEN u.cost_usd IS NULL THEN 1 ELSE 0 END AS unknown {_JOINS} {_PLAYER_JOIN} {_WHERE}"
            ") AS charged GROUP BY player_id ORDER BY 3 DESC, player_id LIMIT ?",
            guild_id, since, until, limit)
        return [_line(row[0], row[1], row[2:]) for row in rows]

    async def guild_usage_daily(self: Any, guild_id: str, since: float, until: float) -> dict[int, int]:
        """Tokens per day: {day index from ``since`` (0 = the first day): tokens}. Days with none are absent.

        One column per day (a month has at most 31) rather than GROUP BY CAST(…): casting a float to an
        integer truncates in SQLite but rounds in PostgreSQL, and this SQL is meant for both."""
        days = max(1, min(62, math.ceil((until - since) / DAY)))
        columns = ", ".join(f"COALESCE(SUM(CASE WHEN u.created_at >= ? AND u.created_at < ? THEN {_TOKENS} END), 0)"
                            for _ in range(days))
        bounds = [edge for day in range(days) for edge in (since + day * DAY, since + (day + 1) * DAY)]
        rows = await self._rows(f"SELECT {columns} {_FROM}", *bounds, guild_id, since, until)
        return {day: int(tokens) for day, tokens in enumerate(rows[0]) if int(tokens)}

    async def count_active_sessions(self: Any) -> int:
        """Adventures running now, in every server (a metric)."""
        rows = await self._rows("SELECT COUNT(*) FROM sessions WHERE status = 'active'")
        return rows[0][0]
