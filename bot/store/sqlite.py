"""The SQLite store (aiosqlite): WAL mode, versioned migrations, one transaction per turn.

Only the connection lives here; the store's methods are shared with PostgreSQL (``bot.store.sql``).

One connection serves the whole process, and aiosqlite runs everything on it one job at a time on its own
thread. Each write transaction is ONE of those jobs (``_transaction``): BEGIN IMMEDIATE, the body's statements
and COMMIT run back to back on that thread, so transactions can never interleave and no asyncio lock is needed.
Why not a lock around statement-by-statement awaits (round 1's design): each statement is then a round trip
through the event loop while the lock is held, and with hundreds of channels streaming a loop pass is long, so
the lock's throughput was set by the loop rather than by SQLite (0.1 ms of SQL per turn, seconds of queueing at
200 channels; bench/README.md). Now a write costs one round trip, like a read.

The bodies are written once for both backends as coroutines over a ``Tx``. Here the ``Tx`` runs each statement
synchronously, so a body never suspends and is driven to its end inside the job (``_run_to_end``); a body that
awaited anything else would be a bug, and fails loudly instead of blocking the thread.

``BEGIN IMMEDIATE`` takes SQLite's write lock at the start, so two processes on one file wait for each other
(``busy_timeout``) instead of failing half-way.

``PRAGMA user_version`` records the schema version (it is part of the file's header, so it commits or rolls
back with the migration's transaction).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.store.base import StoreError
from bot.store.migrations import MIGRATIONS  # noqa: F401  (re-exported: tests and older imports use it here)
from bot.store.sql import SQLStore
from bot.store.turnlock import LocalTurnLocks


T = TypeVar("T")


class _ThreadTx:
    """A transaction's statements, run at once on aiosqlite's thread (inside the job). The methods are
    coroutines only so that a body is written once for both backends: they never suspend."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).rowcount

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return self.conn.execute(sql, args).fetchall()

    async def value(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return row[0] if row else None

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(sql, args)


def _run_to_end(body: Coroutine[Any, Any, T]) -> T:
    """Run a transaction body that never suspends (it only awaits its ``_ThreadTx``) to its end, here."""
    try:
        body.send(None)
    except StopIteration as done:
        return done.value
    body.close()
    raise RuntimeError("a store transaction awaited something other than its own statements; a body may only "
                       "await its tx (bot/store/sql.py)")


def _transact(conn: sqlite3.Connection, body: Callable[[Any], Awaitable[T]], begin: str = "BEGIN IMMEDIATE") -> T:
    """The job on aiosqlite's thread: the whole transaction, committed whole or rolled back."""
    conn.execute(begin)
    try:
        result = _run_to_end(body(_ThreadTx(conn)))  # type: ignore[arg-type]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SQLiteStore(SQLStore):
    dialect = "sqlite"
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms  # how long a write waits for another process's transaction
        self._db: aiosqlite.Connection | None = None
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

    async def _read_version(self, tx: _ThreadTx) -> int:
        return int(await tx.value("PRAGMA user_version"))

    async def _write_version(self, tx: _ThreadTx, version: int) -> None:
        await tx.execute(f"PRAGMA user_version = {int(version)}")

    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self.db.execute_fetchall(sql, args)

    async def _transaction(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """``body``'s statements as one transaction, run as one job on aiosqlite's thread (see the module's
        docstring). Once handed to the thread it runs to its end even if the caller is cancelled meanwhile."""
        db = self.db
        # aiosqlite's own way of running a function on its thread (every statement it runs goes through it).
        return await db._execute(_transact, db._conn, body)

    async def _read(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """Several reads as one job, in one snapshot (a deferred transaction takes no write lock)."""
        db = self.db
        return await db._execute(_transact, db._conn, body, "BEGIN")
