"""The store's methods, written once for SQLite and PostgreSQL over a small connection adapter.

Why one body: every store method, and every table a later feature adds, must behave the same on both backends;
two copies would drift. The SQL here is the common subset of both dialects:
  - placeholders are written ``?``; the PostgreSQL adapter numbers them ($1, $2, ...) once per statement text;
  - a new row's id comes back with ``INSERT ... RETURNING id`` (SQLite >= 3.35 and PostgreSQL);
  - a row lock is spelled ``{self.for_update}`` after a SELECT: " FOR UPDATE" on PostgreSQL, "" on SQLite,
    where BEGIN IMMEDIATE already serializes every writer;
  - sums are turned into int in Python (PostgreSQL's SUM(bigint) is numeric);
  - no ``LIMIT -1`` (SQLite only) or ``LIMIT ALL`` (PostgreSQL only): a very large LIMIT instead.

Adding a table and a method to both backends:
  1. append a migration to ``MIGRATIONS`` in bot/store/migrations.py (SQLite types; see there);
  2. write the method once, here or in a mixin module like bot/store/tokens.py: reads with
     ``await self._rows(sql, *args)`` (several that belong together: a body run by ``await self._read(body)``,
     one snapshot and one round trip); a write is a body ``async def write(tx): ...`` run by
     ``await self._transaction(write)`` (one statement: ``await self._execute(sql, *args)``). The body awaits
     only ``tx.execute`` (returns the rows affected), ``tx.rows``, ``tx.value`` and ``tx.executemany`` (and
     helpers that do only that): on SQLite the whole body runs as one job on the database's thread, so it must
     not wait for anything else (bot/store/sqlite.py). Lock a session's row with
     ``await self._lock_session(tx, id)`` before writing its turns (PostgreSQL's writers run in parallel);
  3. add it to the ``Store`` protocol (bot/store/base.py); tests/unit/test_store.py's ``store`` fixture runs on
     both backends, and ``migrate-db`` copies the new table by itself (in foreign-key order).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from bot.llm.base import Usage
from bot.store.base import (
    CallRecord,
    Channel,
    Player,
    RollRecord,
    Session,
    SessionExists,
    StoreError,
    Turn,
    TurnContext,
    UsageTotals,
    turn_ids,
)
from bot.store import migrations
from bot.store.admin_queries import AdminQueries
from bot.store.memory_queries import MemoryQueries, read_story
from bot.store.tokens import TokenLedger
from bot.store.party import PARTY_STATE, PartyStates

NO_LIMIT = 2**62
SESSION_COLUMNS = (
    "id, guild_id, channel_id, started_by_id, started_by_name, premise, status, created_at, ended_at, token_limit"
)
_ACTIVE_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE channel_id = ? AND status = 'active'"
TURN_COLUMNS = "id, session_id, seq, role, author_id, author_name, content, status, created_at"
T = TypeVar("T")


class Tx(Protocol):
    """One open transaction: the only way a body (``_transaction``, ``_read``) reaches the database."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...
    async def value(self, sql: str, *args: Any) -> Any: ...
    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None: ...


def session_from(row: Sequence[Any]) -> Session:
    return Session(row[0], row[1], row[2], Player(row[3], row[4]), row[5], row[6], row[7], row[8], row[9])


def turn_from(row: Sequence[Any]) -> Turn:
    author = Player(row[4], row[5]) if row[4] is not None else None
    return Turn(row[0], row[1], row[2], row[3], author, row[6], row[7], row[8])


class SQLStore(TokenLedger, AdminQueries, PartyStates, MemoryQueries):
    """Everything but the connection. A backend provides the members below the line."""

    dialect: str  # "sqlite" or "postgres" (picks the migrations' statements)
    for_update: str = ""  # appended to a SELECT that must lock its rows until the transaction ends
    integrity_errors: tuple[type[BaseException], ...] = ()  # what a UNIQUE violation raises
    interrupted_on_open = 0
    empty_note = "not created yet: the first start creates it"  # what `check` says of a database not made yet

    async def _transaction(self, body: Callable[[Tx], Awaitable[T]]) -> T: ...  # all of it or none of it
    async def _read(self, body: Callable[[Tx], Awaitable[T]]) -> T: ...  # several reads in one snapshot
    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...  # a read outside transactions
    async def _connect(self) -> None: ...
    async def _disconnect(self) -> None: ...
    async def _read_version(self, tx: Tx) -> int: ...  # inside a write transaction, locked against others
    async def _write_version(self, tx: Tx, version: int) -> None: ...

    async def _execute(self, sql: str, *args: Any) -> int:
        """One statement as a transaction of its own; the rows it affected."""
        return await self._transaction(lambda tx: tx.execute(sql, *args))

    async def _interrupt_pending(self) -> int:
        """Mark the actions left pending by a stop as interrupted (how many) and held rolls as complete.
        (PostgreSQL does it only when no other bot process is up: their pending turns are still being answered.)"""
        async def write(tx: Tx) -> int:
            # held rolls were made and shown: they stay in the story; a player's action cut by the stop does not
            await tx.execute("UPDATE turns SET status = 'complete' WHERE status = 'pending' AND role = 'roll'")
            return await tx.execute("UPDATE turns SET status = 'interrupted' WHERE status = 'pending'")
        return await self._transaction(write)

    def describe(self) -> str:
        """Where the data lives, with no password (for errors and logs)."""
        return self.__class__.__name__

    async def _stored_version(self) -> int | None:
        """The schema version, read without changing anything (None: no database yet, it will be created)."""
        raise NotImplementedError

    def _newer(self, version: int) -> StoreError:
        return StoreError(
            f"the database {self.describe()} was written by a newer version of the bot (schema version {version}; "
            f"this version knows up to {len(migrations.MIGRATIONS)}): upgrade the bot to open it, or use another "
            "database")

    async def inspect(self) -> str:
        """What ``dungeon-master check`` says of the database, without migrating it; raises ``StoreError`` when
        it cannot be opened or was written by a newer bot (the same line ``open`` would give)."""
        version = await self._stored_version()
        newest = len(migrations.MIGRATIONS)
        if version is None:
            return f"{self.describe()} ({self.empty_note})"
        if version > newest:
            raise self._newer(version)
        state = "up to date" if version == newest else f"will be migrated to {newest} at start"
        return f"{self.describe()} (schema version {version}, {state})"

    # -- opening ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate (each migration whole or not at all), mark turns left pending by a crash."""
        await self._connect()
        try:
            await self._migrate()
            self.interrupted_on_open = await self._interrupt_pending()
        except BaseException:
            await self._disconnect()
            raise

    async def close(self) -> None:
        await self._disconnect()

    async def _migrate(self) -> None:
        newest = len(migrations.MIGRATIONS)

        async def step(tx: Tx) -> bool:
            """Apply the next migration; False when there is none."""
            version = await self._read_version(tx)
            if version > newest:
                raise self._newer(version)
            if version == newest:
                return False
            for statement in migrations.statements(migrations.MIGRATIONS[version], self.dialect):
                await tx.execute(statement)
            await self._write_version(tx, version + 1)
            return True

        while await self._transaction(step):
            pass

    async def schema_version(self) -> int:
        return await self._transaction(self._read_version)

    async def _lock_session(self, tx: Tx, session_id: int) -> None:
        """Serialize the writers of one session's turns (their seq is MAX(seq) + 1)."""
        if self.for_update:
            await tx.execute(f"SELECT id FROM sessions WHERE id = ?{self.for_update}", session_id)

    # -- sessions ---------------------------------------------------------------------------------------------

    async def start_session(self, channel: Channel, starter: Player, premise: str) -> Session:
        now = time.time()
        try:
            session_id = await self._transaction(lambda tx: tx.value(
                "INSERT INTO sessions (guild_id, channel_id, started_by_id, started_by_name, premise, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, 'active', ?) RETURNING id",
                channel.guild_id, channel.channel_id, starter.id, starter.name, premise, now))
        except self.integrity_errors:
            raise SessionExists(channel.channel_id) from None
        return Session(session_id, channel.guild_id, channel.channel_id, starter, premise, "active", now)

    async def active_session(self, channel_id: str) -> Session | None:
        rows = await self._rows(_ACTIVE_SESSION, channel_id)
        return session_from(rows[0]) if rows else None

    async def turn_context(self, channel_id: str, *, story: bool = True) -> TurnContext | None:
        async def read(tx: Tx) -> TurnContext | None:
            rows = await tx.rows(_ACTIVE_SESSION, channel_id)
            if not rows:
                return None
            session = session_from(rows[0])
            party = await tx.rows(PARTY_STATE, session.id)
            return TurnContext(session, party[0][0] if party else None,
                               await read_story(tx, session.id) if story else None)
        return await self._read(read)

    async def end_session(self, session_id: int, ended_by: Player) -> None:
        await self._execute(
            "UPDATE sessions SET status = 'ended', ended_at = ?, ended_by_id = ? WHERE id = ? AND status = 'active'",
            time.time(), ended_by.id, session_id)

    async def set_token_limit(self, session_id: int, limit: int | None) -> None:
        await self._execute("UPDATE sessions SET token_limit = ? WHERE id = ?", limit, session_id)

    # -- turns ------------------------------------------------------------------------------------------------

    @staticmethod
    async def _insert_turn(tx: Tx, session_id: int, role: str, author: Player | None, content: str,
                           status: str) -> int:
        return await tx.value(
            "INSERT INTO turns (session_id, seq, role, author_id, author_name, content, status, created_at)"
            " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?), ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            session_id, session_id, role, author and author.id, author and author.name, content, status, time.time(),
        )

    @staticmethod
    async def _insert_calls(tx: Tx, session_id: int, turn_id: int | None, calls: list[CallRecord]) -> None:
        if not calls:
            return
        now = time.time()
        await tx.executemany(
            "INSERT INTO usage (session_id, turn_id, provider, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_write_tokens, cost_usd, created_at, estimated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (session_id, turn_id, c.provider, c.model, c.usage.input_tokens, c.usage.output_tokens,
                 c.usage.cache_read_tokens, c.usage.cache_write_tokens, c.cost_usd, now, int(c.estimated))
                for c in calls
            ],
        )

    @staticmethod
    async def _insert_roll(tx: Tx, channel: Channel | None, session_id: int | None, turn_id: int | None,
                           roll: RollRecord) -> None:
        await tx.execute(
            "INSERT INTO rolls (session_id, turn_id, guild_id, channel_id, roller_id, roller_name, expression, total,"
            " detail, reason, by_dm, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            session_id, turn_id, channel and channel.guild_id, channel and channel.channel_id, roll.roller.id,
            roll.roller.name, roll.expression, roll.total, roll.detail, roll.reason, int(roll.by_dm), time.time(),
        )

    async def begin_turn(self, session_id: int, player: Player, text: str) -> int:
        async def write(tx: Tx) -> int:
            await self._lock_session(tx, session_id)
            return await self._insert_turn(tx, session_id, "player", player, text, "pending")
        return await self._transaction(write)

    async def complete_turn(
        self,
        session_id: int,
        player_turn_id: int | Sequence[int] | None,
        dm_text: str,
        calls: list[CallRecord],
        rolls: list[RollRecord],
    ) -> int:
        async def write(tx: Tx) -> int:
            await self._lock_session(tx, session_id)
            for turn_id in turn_ids(player_turn_id):  # one action, or a batch's
                await tx.execute("UPDATE turns SET status = 'complete' WHERE id = ?", turn_id)
            await self._insert_rolls(tx, session_id, rolls, "complete")
            dm_turn_id = await self._insert_turn(tx, session_id, "dm", None, dm_text, "complete")
            await self._insert_calls(tx, session_id, dm_turn_id, calls)
            await self._release_held_rolls(tx, session_id)
            return dm_turn_id
        return await self._transaction(write)

    async def fail_turn(
        self, session_id: int, player_turn_id: int | Sequence[int] | None, calls: list[CallRecord], *,
        interrupted: bool = False, rolls: list[RollRecord] = (),
    ) -> None:
        status = "interrupted" if interrupted else "failed"
        ids = turn_ids(player_turn_id)
        async def write(tx: Tx) -> None:
            await self._lock_session(tx, session_id)
            for turn_id in ids:
                await tx.execute("UPDATE turns SET status = ? WHERE id = ?", status, turn_id)
            await self._insert_rolls(tx, session_id, rolls, status)  # shown, so kept: made, not in the story
            await self._insert_calls(tx, session_id, ids[0] if ids else None, calls)
            await self._release_held_rolls(tx, session_id)
        await self._transaction(write)

    async def _insert_rolls(self, tx: Tx, session_id: int, rolls: Sequence[RollRecord], status: str) -> None:
        for roll in rolls:
            turn_id = await self._insert_turn(tx, session_id, "roll", roll.roller, roll.summary, status)
            await self._insert_roll(tx, None, session_id, turn_id, roll)

    async def add_roll(self, channel: Channel, session_id: int | None, roll: RollRecord, *,
                       held: bool = False) -> bool:
        async def write(tx: Tx) -> bool:
            turn_id, in_session = None, session_id
            if session_id is not None:
                await self._lock_session(tx, session_id)
                # Only into an adventure still running: a roll racing /end is kept, outside the story.
                if await tx.rows("SELECT 1 FROM sessions WHERE id = ? AND status = 'active'", session_id):
                    turn_id = await self._insert_turn(tx, session_id, "roll", roll.roller, roll.summary,
                                                      "pending" if held else "complete")
                else:
                    in_session = None
            await self._insert_roll(tx, channel, in_session, turn_id, roll)
            return turn_id is not None
        return await self._transaction(write)

    async def release_held_rolls(self, session_id: int) -> None:
        async def write(tx: Tx) -> None:
            await self._lock_session(tx, session_id)
            await self._release_held_rolls(tx, session_id)
        await self._transaction(write)

    @staticmethod
    async def _release_held_rolls(tx: Tx, session_id: int) -> None:
        """Held rolls (pending roll turns) move, in their order, after everything stored so far."""
        held = await tx.rows("SELECT id FROM turns WHERE session_id = ? AND role = 'roll' AND status = 'pending'"
                             " ORDER BY seq", session_id)
        for (turn_id,) in held:
            await tx.execute(
                "UPDATE turns SET status = 'complete', seq = (SELECT MAX(seq) + 1 FROM turns WHERE session_id = ?)"
                " WHERE id = ?", session_id, turn_id)

    async def count_turns(self, session_id: int) -> int:
        rows = await self._rows("SELECT COUNT(*) FROM turns WHERE session_id = ? AND status = 'complete'", session_id)
        return int(rows[0][0])

    async def turns(self, session_id: int, offset: int = 0) -> list[Turn]:
        rows = await self._rows(
            f"SELECT {TURN_COLUMNS} FROM turns WHERE session_id = ? AND status = 'complete'"
            " ORDER BY seq LIMIT ? OFFSET ?", session_id, NO_LIMIT, offset)
        return [turn_from(row) for row in rows]

    async def all_turns(self, session_id: int) -> list[Turn]:
        """Every turn whatever its status (for tests, audits and migrate-db's comparison)."""
        rows = await self._rows(f"SELECT {TURN_COLUMNS} FROM turns WHERE session_id = ? ORDER BY seq", session_id)
        return [turn_from(row) for row in rows]

    async def count_rows(self, table: str) -> int:
        """Rows in one of the store's own tables (for tests and migrate-db; ``table`` is never user input)."""
        if not table.isidentifier():
            raise ValueError(table)
        return int((await self._rows(f"SELECT COUNT(*) FROM {table}"))[0][0])

    # -- usage ------------------------------------------------------------------------------------------------

    async def usage_totals(self, session_id: int) -> UsageTotals:
        rows = await self._rows(
            "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
            " COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_write_tokens), 0),"
            " COALESCE(SUM(cost_usd), 0), COUNT(*) - COUNT(cost_usd), COUNT(*),"
            " COALESCE(SUM(CASE WHEN estimated <> 0 THEN input_tokens + output_tokens + cache_read_tokens"
            " + cache_write_tokens ELSE 0 END), 0) FROM usage WHERE session_id = ?",
            session_id)
        i, o, cr, cw, cost, unknown, calls, estimated = rows[0]
        return UsageTotals(Usage(int(i), int(o), int(cr), int(cw)), float(cost), unknown == 0, int(calls),
                           int(estimated))

    # -- meta -------------------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM meta WHERE key = ?", key)
        return rows[0][0] if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key, value)

