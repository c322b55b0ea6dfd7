"""The PostgreSQL store (asyncpg): the same methods and migrations as SQLite (``bot.store.sql``), for several
bot processes over one database.

Only the connection lives here:
  - a pool of connections; each write is one transaction on one of them (READ COMMITTED), and the writers of
    one session's turns lock its row first (``FOR UPDATE``), so seq numbers never collide across processes;
  - the schema version is a one-row table ``schema_version``; migrations take a transaction-level advisory lock,
    so two processes starting together migrate once;
  - every store holds a *shared* advisory lock on a connection of its own for as long as it is open. On open, a
    store that can take the same lock *exclusively* knows no other bot process is running, and only then marks
    the turns left pending as interrupted (with other processes up, a pending turn may be theirs, mid-answer).
    A process that dies loses its connection, and so its lock, at once;
  - turns take a per-session advisory lock (``turn_lock``, bot/store/turnlock.py), so with other processes up a
    store still marks as interrupted the pending turns whose session nobody holds: those of a process that died.

The URL is ``postgresql://user:password@host:port/database`` (``postgres://`` too); extra query parameters
such as ``?search_path=myschema`` are passed to the server as settings. Its password is never shown: errors
and ``dungeon-master check`` print ``mask_url(url)``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from bot.store.base import StoreError, mask_url
from bot.store.sql import SQLStore
from bot.store.turnlock import AdvisoryTurnLocks

# Arbitrary constants that name this bot's advisory locks (pg_advisory_lock takes any 64-bit key).
MIGRATION_LOCK = 0x444D_0001
PROCESS_LOCK = 0x444D_0002
_PLACEHOLDER = re.compile(r"'[^']*'|\?")
T = TypeVar("T")


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (question marks inside '...' literals are kept)."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() != "?":
            return match.group()
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def _affected(status: str) -> int:
    """Rows affected, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class _PostgresTx:
    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _affected(await self.conn.execute(numbered(sql), *args))

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self.conn.fetch(numbered(sql), *args)

    async def value(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(numbered(sql), *args)

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self.conn.executemany(numbered(sql), args)


class PostgresStore(SQLStore):
    dialect = "postgres"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    integrity_errors = (asyncpg.UniqueViolationError,)
    empty_note = "no tables yet: the first start creates them"

    def __init__(self, url: str, *, min_connections: int = 1, max_connections: int = 10) -> None:
        self.url = url
        self.min_connections, self.max_connections = min_connections, max_connections
        self._pool: asyncpg.Pool | None = None
        self._process_lock: asyncpg.Connection | None = None
        self._turn_locks: AdvisoryTurnLocks | None = None
        self.interrupted_on_open = 0

    def turn_lock(self, session_id: int) -> AbstractAsyncContextManager[None]:
        """One turn at a time per session across every bot process: a PostgreSQL advisory lock that dies with
        its connection, so a killed process leaves none behind (bot/store/turnlock.py)."""
        if self._turn_locks is None:
            raise RuntimeError("the store is not open")
        return self._turn_locks.hold(session_id)

    def describe(self) -> str:
        return mask_url(self.url)

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (also for PostgreSQL-only features such as advisory turn locks)."""
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            await super().open()
        except StoreError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as error:
            raise self._error(error) from None

    async def _stored_version(self) -> int | None:
        try:
            conn = await asyncpg.connect(self._dsn(), timeout=10)
            try:
                if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                    return None
                return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
            finally:
                await conn.close()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as error:
            raise self._error(error) from None

    def _dsn(self) -> str:
        return "postgresql://" + self.url.partition("://")[2]

    def _error(self, error: BaseException) -> StoreError:
        reason = str(error).replace(self.url, self.describe()) or type(error).__name__
        return StoreError(f"cannot open the database {self.describe()}: {reason}")

    async def _connect(self) -> None:
        dsn = self._dsn()
        self._pool = await asyncpg.create_pool(dsn, min_size=self.min_connections, max_size=self.max_connections,
                                               timeout=10)
        try:
            self._process_lock = await asyncpg.connect(dsn, timeout=10)
            self._turn_locks = AdvisoryTurnLocks(dsn)  # connects at the first turn
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        if self._turn_locks is not None:
            await self._turn_locks.close()
            self._turn_locks = None
        if self._process_lock is not None:
            await self._process_lock.close()
            self._process_lock = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _interrupt_pending(self) -> int:
        lock = self._process_lock
        assert lock is not None
        # Exclusive first: held, no other store can be up or start meanwhile; then shared for as long as we run.
        alone = await lock.fetchval("SELECT pg_try_advisory_lock($1)", PROCESS_LOCK)
        await lock.execute("SELECT pg_advisory_lock_shared($1)", PROCESS_LOCK)
        if not alone:
            return await self._interrupt_orphans()
        try:
            return await super()._interrupt_pending()
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", PROCESS_LOCK)

    async def _interrupt_orphans(self) -> int:
        """Other bot processes are up: a pending turn is theirs, mid-answer, exactly while they hold its session's
        turn lock (taken before the action is stored, released after the outcome is). Turns pending in a session
        whose lock is free were left by a process that died: only those become interrupted."""
        assert self._turn_locks is not None
        pending = await self._rows("SELECT DISTINCT session_id FROM turns WHERE status = 'pending'")
        cut = 0
        for (session_id,) in pending:
            if not await self._turn_locks.try_hold(session_id):
                continue  # a live process is answering it
            try:
                cut += await self._execute("UPDATE turns SET status = 'interrupted' WHERE session_id = ? AND "
                                           "status = 'pending'", session_id)
            finally:
                await self._turn_locks.release(session_id)
        return cut

    async def _read_version(self, tx: _PostgresTx) -> int:
        await tx.execute("SELECT pg_advisory_xact_lock(?)", MIGRATION_LOCK)
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await tx.value("SELECT MAX(version) FROM schema_version")
        return int(version or 0)

    async def _write_version(self, tx: _PostgresTx, version: int) -> None:
        await tx.execute("DELETE FROM schema_version")
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)

    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self.pool.fetch(numbered(sql), *args)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_PostgresTx]:
        """One transaction on one pooled connection: all of it is committed, or none of it (PostgreSQL only;
        the shared store writes through ``_transaction``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield _PostgresTx(conn)

    async def _transaction(self, body: Callable[[_PostgresTx], Awaitable[T]]) -> T:
        async with self._write() as tx:
            return await body(tx)

    async def _read(self, body: Callable[[_PostgresTx], Awaitable[T]]) -> T:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await body(_PostgresTx(conn))
