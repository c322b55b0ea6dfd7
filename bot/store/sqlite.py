"""The SQLite store (aiosqlite): WAL mode, versioned migrations, one transaction per turn.

One connection serves the whole process. aiosqlite runs its statements one at a time on its own thread, but
coroutines could still interleave statements *inside* each other's transactions, so every write transaction
holds ``_write_lock``. ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start, so two processes on one
file wait for each other (``busy_timeout``) instead of failing half-way.

Every statement is a round trip to that thread and back through the event loop, which takes a while when the
loop is busy (hundreds of channels streaming): reads take one trip (``execute_fetchall``), and the write lock is
held for as few trips as possible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from bot.llm.base import Usage
from bot.store.sqlite_memory import SQLiteMemoryTables
from bot.store.base import (
    CallRecord,
    Channel,
    Player,
    RollRecord,
    Session,
    SessionExists,
    Turn,
    UsageTotals,
)

# Each entry moves the schema one version up; PRAGMA user_version records where a file stands.
# Never edit a released migration: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id              INTEGER PRIMARY KEY,
        guild_id        TEXT,
        channel_id      TEXT NOT NULL,
        started_by_id   TEXT NOT NULL,
        started_by_name TEXT NOT NULL,
        premise         TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('active', 'ended')),
        created_at      REAL NOT NULL,
        ended_at        REAL,
        ended_by_id     TEXT
    );
    -- one active session per channel, enforced by the database itself
    CREATE UNIQUE INDEX sessions_one_active ON sessions (channel_id) WHERE status = 'active';

    CREATE TABLE turns (
        id          INTEGER PRIMARY KEY,
        session_id  INTEGER NOT NULL REFERENCES sessions (id),
        seq         INTEGER NOT NULL,
        role        TEXT NOT NULL CHECK (role IN ('player', 'dm', 'roll')),
        author_id   TEXT,
        author_name TEXT,
        content     TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('pending', 'complete', 'failed', 'interrupted')),
        created_at  REAL NOT NULL,
        UNIQUE (session_id, seq)
    );
    CREATE INDEX turns_complete ON turns (session_id, status, seq);

    CREATE TABLE usage (
        id                 INTEGER PRIMARY KEY,
        session_id         INTEGER NOT NULL REFERENCES sessions (id),
        turn_id            INTEGER REFERENCES turns (id),
        provider           TEXT NOT NULL,
        model              TEXT NOT NULL,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cost_usd           REAL,
        created_at         REAL NOT NULL
    );
    CREATE INDEX usage_session ON usage (session_id);

    CREATE TABLE rolls (
        id          INTEGER PRIMARY KEY,
        session_id  INTEGER REFERENCES sessions (id),
        turn_id     INTEGER REFERENCES turns (id),
        guild_id    TEXT,
        channel_id  TEXT,
        roller_id   TEXT NOT NULL,
        roller_name TEXT NOT NULL,
        expression  TEXT NOT NULL,
        total       INTEGER NOT NULL,
        detail      TEXT NOT NULL,
        reason      TEXT,
        by_dm       INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL
    );

    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: an admin may give one session its own token budget (NULL: the configured tokens_per_session)
    """
    ALTER TABLE sessions ADD COLUMN token_limit INTEGER;
    """,
    # 3: campaign memory (issue 14): the running summary with its progress marker, and the players' pinned facts
    """
    CREATE TABLE memory_summaries (
        session_id  INTEGER PRIMARY KEY REFERENCES sessions (id),
        text        TEXT NOT NULL,
        folded_seq  INTEGER NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE memory_pins (
        id          INTEGER PRIMARY KEY,
        session_id  INTEGER NOT NULL REFERENCES sessions (id),
        number      INTEGER NOT NULL,
        author_id   TEXT NOT NULL,
        author_name TEXT NOT NULL,
        text        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        removed_at  REAL,
        UNIQUE (session_id, number)
    );
    CREATE INDEX turns_story ON turns (session_id, status, role, seq);
    """,
]

_SESSION_COLUMNS = (
    "id, guild_id, channel_id, started_by_id, started_by_name, premise, status, created_at, ended_at, token_limit"
)
_TURN_COLUMNS = "id, session_id, seq, role, author_id, author_name, content, status, created_at"


def _session(row: aiosqlite.Row) -> Session:
    return Session(row[0], row[1], row[2], Player(row[3], row[4]), row[5], row[6], row[7], row[8], row[9])


def _turn(row: aiosqlite.Row) -> Turn:
    author = Player(row[4], row[5]) if row[4] is not None else None
    return Turn(row[0], row[1], row[2], row[3], author, row[6], row[7], row[8])


class SQLiteStore(SQLiteMemoryTables):
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self.interrupted_on_open = 0

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below says BEGIN IMMEDIATE itself.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA busy_timeout = 10000")
        await self.db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode loses nothing a process crash (kill -9) could; only a power cut can undo the
        # last commits. FULL would cost an fsync per turn.
        await self.db.execute("PRAGMA synchronous = NORMAL")
        await self.db.execute("PRAGMA foreign_keys = ON")
        await self._migrate()
        async with self._write() as db:
            cursor = await db.execute("UPDATE turns SET status = 'interrupted' WHERE status = 'pending'")
            self.interrupted_on_open = cursor.rowcount

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        async with self._write() as db:
            (version,) = await (await db.execute("PRAGMA user_version")).fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in (s.strip() for s in script.split(";")):
                    if statement:
                        await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    async def schema_version(self) -> int:
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()
        return version

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    # -- sessions -------------------------------------------------------------------------------------------

    async def start_session(self, channel: Channel, starter: Player, premise: str) -> Session:
        now = time.time()
        try:
            async with self._write() as db:
                cursor = await db.execute(
                    "INSERT INTO sessions (guild_id, channel_id, started_by_id, started_by_name, premise, status,"
                    " created_at) VALUES (?, ?, ?, ?, ?, 'active', ?)",
                    (channel.guild_id, channel.channel_id, starter.id, starter.name, premise, now),
                )
        except aiosqlite.IntegrityError:
            raise SessionExists(channel.channel_id) from None
        return Session(cursor.lastrowid, channel.guild_id, channel.channel_id, starter, premise, "active", now)

    async def active_session(self, channel_id: str) -> Session | None:
        rows = await self.db.execute_fetchall(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE channel_id = ? AND status = 'active'", (channel_id,)
        )
        return _session(rows[0]) if rows else None

    async def end_session(self, session_id: int, ended_by: Player) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE sessions SET status = 'ended', ended_at = ?, ended_by_id = ? WHERE id = ? AND status = 'active'",
                (time.time(), ended_by.id, session_id),
            )

    async def set_token_limit(self, session_id: int, limit: int | None) -> None:
        async with self._write() as db:
            await db.execute("UPDATE sessions SET token_limit = ? WHERE id = ?", (limit, session_id))

    # -- turns ----------------------------------------------------------------------------------------------

    @staticmethod
    async def _insert_turn(
        db: aiosqlite.Connection, session_id: int, role: str, author: Player | None, content: str, status: str
    ) -> int:
        cursor = await db.execute(
            "INSERT INTO turns (session_id, seq, role, author_id, author_name, content, status, created_at)"
            " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?), ?, ?, ?, ?, ?, ?)",
            (session_id, session_id, role, author and author.id, author and author.name, content, status, time.time()),
        )
        return cursor.lastrowid

    @staticmethod
    async def _insert_calls(db: aiosqlite.Connection, session_id: int, turn_id: int | None, calls: list[CallRecord]):
        now = time.time()
        await db.executemany(
            "INSERT INTO usage (session_id, turn_id, provider, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_write_tokens, cost_usd, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (session_id, turn_id, c.provider, c.model, c.usage.input_tokens, c.usage.output_tokens,
                 c.usage.cache_read_tokens, c.usage.cache_write_tokens, c.cost_usd, now)
                for c in calls
            ],
        )

    @staticmethod
    async def _insert_roll(
        db: aiosqlite.Connection, channel: Channel | None, session_id: int | None, turn_id: int | None, roll: RollRecord
    ) -> None:
        await db.execute(
            "INSERT INTO rolls (session_id, turn_id, guild_id, channel_id, roller_id, roller_name, expression, total,"
            " detail, reason, by_dm, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, turn_id, channel and channel.guild_id, channel and channel.channel_id, roll.roller.id,
             roll.roller.name, roll.expression, roll.total, roll.detail, roll.reason, int(roll.by_dm), time.time()),
        )

    async def begin_turn(self, session_id: int, player: Player, text: str) -> int:
        # One statement is a transaction on its own: no BEGIN/COMMIT round trips while holding the write lock.
        async with self._write_lock:
            return await self._insert_turn(self.db, session_id, "player", player, text, "pending")

    async def complete_turn(
        self,
        session_id: int,
        player_turn_id: int | None,
        dm_text: str,
        calls: list[CallRecord],
        rolls: list[RollRecord],
    ) -> int:
        async with self._write() as db:
            if player_turn_id is not None:
                await db.execute("UPDATE turns SET status = 'complete' WHERE id = ?", (player_turn_id,))
            for roll in rolls:
                turn_id = await self._insert_turn(db, session_id, "roll", roll.roller, roll.summary, "complete")
                await self._insert_roll(db, None, session_id, turn_id, roll)
            dm_turn_id = await self._insert_turn(db, session_id, "dm", None, dm_text, "complete")
            await self._insert_calls(db, session_id, dm_turn_id, calls)
        return dm_turn_id

    async def fail_turn(
        self, session_id: int, player_turn_id: int | None, calls: list[CallRecord], *, interrupted: bool = False
    ) -> None:
        status = "interrupted" if interrupted else "failed"
        async with self._write() as db:
            if player_turn_id is not None:
                await db.execute("UPDATE turns SET status = ? WHERE id = ?", (status, player_turn_id))
            await self._insert_calls(db, session_id, player_turn_id, calls)

    async def add_roll(self, channel: Channel, session_id: int | None, roll: RollRecord) -> None:
        async with self._write() as db:
            turn_id = None
            if session_id is not None:
                turn_id = await self._insert_turn(db, session_id, "roll", roll.roller, roll.summary, "complete")
            await self._insert_roll(db, channel, session_id, turn_id, roll)

    async def count_turns(self, session_id: int) -> int:
        rows = await self.db.execute_fetchall(
            "SELECT COUNT(*) FROM turns WHERE session_id = ? AND status = 'complete'", (session_id,)
        )
        return rows[0][0]

    async def turns(self, session_id: int, offset: int = 0) -> list[Turn]:
        rows = await self.db.execute_fetchall(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ? AND status = 'complete'"
            " ORDER BY seq LIMIT -1 OFFSET ?",
            (session_id, offset),
        )
        return [_turn(row) for row in rows]

    async def all_turns(self, session_id: int) -> list[Turn]:
        """Every turn whatever its status (for tests and audits)."""
        cursor = await self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        return [_turn(row) for row in await cursor.fetchall()]

    # -- usage ----------------------------------------------------------------------------------------------

    async def usage_totals(self, session_id: int) -> UsageTotals:
        rows = await self.db.execute_fetchall(
            "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
            " COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_write_tokens), 0),"
            " COALESCE(SUM(cost_usd), 0), COUNT(*) - COUNT(cost_usd), COUNT(*) FROM usage WHERE session_id = ?",
            (session_id,),
        )
        i, o, cr, cw, cost, unknown, calls = rows[0]
        return UsageTotals(Usage(i, o, cr, cw), float(cost), unknown == 0, calls)

    # -- meta -----------------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        cursor = await self.db.execute("SELECT value FROM meta WHERE key = ?", (key,))
        row = await cursor.fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
