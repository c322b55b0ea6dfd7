"""Per-adventure turn locks: one turn at a time per session, across every bot process that shares the database.

Why: a server's events reach the process that runs its shard, but during a rolling restart two processes can
hold the same shard for a moment, and both may receive a channel's commands. Each process already runs one
channel's turns one after another (``DMService``); this lock makes that hold across processes, so a turn
always sees the one before it, and two turns never write the same session at once.

- ``LocalTurnLocks`` (SQLite: one process owns the file): an ``asyncio.Lock`` per session, nothing more.
- ``AdvisoryTurnLocks`` (PostgreSQL): a session-level advisory lock per session. Uncontended (the normal case:
  a channel's commands reach one process) every lock of this process is taken with ``pg_try_advisory_lock``
  on ONE dedicated connection, however many turns are in flight (a blocking ``pg_advisory_lock`` or an
  ``xact`` lock would tie up a pooled connection for the whole LLM call). When another process holds it, the
  turn queues with a blocking ``pg_advisory_lock`` on a connection of its own, so turns are served in the
  order they arrived. Session-level locks belong to their connection: when the process dies (even by
  ``kill -9``) the server sees the socket close and releases them, so a lock is never left behind. The key is
  two 32-bit ints, ``(NAMESPACE, session id)``, so the bot's locks cannot collide with another application's
  in the same database.

Both are async context managers factories: ``async with locks.hold(session_id): ...``.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

NAMESPACE = 0x444D5431  # "DMT1": the first half of every turn lock's key


def _int32(value: int) -> int:
    folded = value & 0xFFFFFFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


def namespace_for(dsn: str) -> int:
    """NAMESPACE, or a value derived from the URL's ``search_path`` when it names one: advisory locks are
    per database, so bots kept apart by schema (one database, several schemas) must not share lock keys."""
    search_path = parse_qs(urlsplit(dsn).query).get("search_path", [""])[0]
    return NAMESPACE if not search_path else _int32(zlib.crc32(f"DMT1:{search_path}".encode()))


def lock_key(session_id: int, namespace: int = NAMESPACE) -> tuple[int, int]:
    """The advisory lock key of a session: (namespace, session id folded into a signed 32-bit int)."""
    return namespace, _int32(session_id)


class _PerSession:
    """asyncio locks by session id, dropped when nobody holds or waits for them (idle sessions cost nothing)."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, session_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)


class LocalTurnLocks(_PerSession):
    """One process owns the database (SQLite): an in-process lock per session is all it takes."""

    async def close(self) -> None:
        return None


class AdvisoryTurnLocks:
    """PostgreSQL advisory locks on one dedicated connection (see the module docstring)."""

    def __init__(self, dsn: str, *, connect: Any = None) -> None:
        self.dsn = dsn
        self.namespace = namespace_for(dsn)
        self._connect = connect
        self._conn: Any = None
        self._io = asyncio.Lock()  # an asyncpg connection runs one query at a time
        self._local = _PerSession()  # a session lock is reentrant on one connection: serialize in-process first
        self.held: set[int] = set()
        self.waits = 0  # tries refused because another process held the lock (for tests and logs)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            if self._conn is not None and self.held:
                # The locks died with the old connection; the turns holding them go on unprotected.
                log.warning("the turn-lock connection to PostgreSQL was lost while %d turns held locks",
                            len(self.held))
            self._conn = await self._open()
        return self._conn

    async def _query(self, sql: str, session_id: int) -> Any:
        async with self._io:
            conn = await self._connection()
            return await conn.fetchval(sql, *lock_key(session_id, self.namespace))

    async def try_hold(self, session_id: int) -> bool:
        """One try: True if this process now holds the session's lock."""
        return bool(await self._query("SELECT pg_try_advisory_lock($1, $2)", session_id))

    async def release(self, session_id: int) -> None:
        await self._query("SELECT pg_advisory_unlock($1, $2)", session_id)

    @asynccontextmanager
    async def hold(self, session_id: int) -> AsyncIterator[None]:
        async with self._local.hold(session_id):
            waiter = None if await self.try_hold(session_id) else await self._wait_in_line(session_id)
            self.held.add(session_id)
            try:
                yield
            finally:
                self.held.discard(session_id)
                # Shielded: a cancelled turn must still let go (else the lock lives until the connection closes).
                try:
                    if waiter is None:
                        await asyncio.shield(self.release(session_id))
                    else:
                        await asyncio.shield(waiter.close())  # its locks end with it
                except Exception:  # the connection is gone, and the lock with it
                    log.warning("could not release the turn lock of session %s (connection lost)", session_id)
                    if waiter is not None:
                        waiter.terminate()

    async def _wait_in_line(self, session_id: int) -> Any:
        """Another process holds the lock: queue for it with a blocking ``pg_advisory_lock`` on a connection of
        our own, so waiters are served first come, first served (PostgreSQL's lock queue), the turns of one
        channel in the order they arrived. Such waits happen only when two processes receive one channel's
        commands (a rolling restart), so a connection per waiting turn costs little."""
        self.waits += 1
        waiter = await self._open()
        try:
            await waiter.execute("SELECT pg_advisory_lock($1, $2)", *lock_key(session_id, self.namespace))
        except BaseException:
            waiter.terminate()  # cancelled while waiting: whatever it got ends with the connection
            raise
        return waiter

    async def _open(self) -> Any:
        connect = self._connect
        if connect is None:
            import asyncpg

            connect = asyncpg.connect
        return await connect(self.dsn)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
