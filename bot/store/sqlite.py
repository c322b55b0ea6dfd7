"""The SQLite store (aiosqlite): WAL mode, versioned migrations, one transaction per turn.

Only the connection lives here; the store's methods are shared with PostgreSQL (``bot.store.sql``).

One connection serves the whole process. aiosqlite runs its statements one at a time on its own thread, but
coroutines could still interleave statements *inside* each other's transactions, so every write transaction
holds ``_write_lock``. ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start, so two processes on one
file wait for each other (``busy_timeout``) instead of failing half-way.

Every statement is a round trip to that thread and back through the event loop, which takes a while when the
loop is busy (hundreds of channels streaming): reads take one trip (``execute_fetchall``), and the write lock is
held for as few trips as possible.

``PRAGMA user_version`` records the schema version (it is part of the file's header, so it commits or rolls
back with the migration's transaction).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.base import StoreError
from bot.store.migrations import MIGRATIONS  # noqa: F401  (re-exported: tests and older imports use it here)
from bot.store.sql import SQLStore
from bot.store.turnlock import LocalTurnLocks


class _SQLiteTx:
    __slots__ = ("db",)

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self.db.execute(sql, args)
        return cursor.rowcount

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self.db.execute_fetchall(sql, args)

    async def value(self, sql: str, *args: Any) -> Any:
        rows = await self.db.execute_fetchall(sql, args)
        return rows[0][0] if rows else None

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self.db.executemany(sql, args)


class SQLiteStore(SQLStore):
    dialect = "sqlite"
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms  # how long a write waits for another process's transaction
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self.interrupted_on_open = 0
        self._turn_locks = LocalTurnLocks()

    def turn_lock(self, session_id: int) -> AbstractAsyncContextManager[None]:
        """One turn at a time per session. One process owns an SQLite file, so an in-process lock suffices
        (bot/store/turnlock.py; the PostgreSQL store holds an advisory lock instead)."""
        return self._turn_locks.hold(session_id)

    def describe(self) -> str:
        return self.path

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        try:
            await super().open()
        except (sqlite3.DatabaseError, OSError) as error:  # not a database, unreadable, a folder, disk full...
            raise StoreError(f"cannot open the database {self.path}: {error}") from None

    async def _stored_version(self) -> int | None:
        if self.path == ":memory:" or not Path(self.path).exists():
            return None
        try:
            async with aiosqlite.connect(f"file:{Path(self.path).absolute()}?mode=ro", uri=True) as db:
                await db.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")  # fails on a file that is no database
                return int((await db.execute_fetchall("PRAGMA user_version"))[0][0])
        except (sqlite3.DatabaseError, OSError) as error:
            raise StoreError(f"cannot open the database {self.path}: {error}") from None

    async def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below says BEGIN IMMEDIATE itself.
        connecting = aiosqlite.connect(self.path, isolation_level=None)
        try:
            self._db = await connecting
        except BaseException:
            # aiosqlite stops its thread without waiting; if the loop closed first (the CLI exits with this
            # error), the thread would print a traceback. Let it finish.
            await asyncio.to_thread(connecting._thread.join, 5)
            raise
        try:
            await self.db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await self.db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode loses nothing a process crash (kill -9) could; only a power cut can undo the
            # last commits. FULL would cost an fsync per turn.
            await self.db.execute("PRAGMA synchronous = NORMAL")
            await self.db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _read_version(self, tx: _SQLiteTx) -> int:
        return int(await tx.value("PRAGMA user_version"))

    async def _write_version(self, tx: _SQLiteTx, version: int) -> None:
        await tx.execute(f"PRAGMA user_version = {int(version)}")

    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self.db.execute_fetchall(sql, args)

    @asynccontextmanager
    async def _write(self, *, single: bool = False) -> AsyncIterator[_SQLiteTx]:
        """One write transaction: all of it is committed, or none of it. ``single``: the caller runs one
        statement, which SQLite makes a transaction by itself (two round trips fewer)."""
        async with self._write_lock:
            if single:
                yield _SQLiteTx(self.db)
                return
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(self.db)
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")
