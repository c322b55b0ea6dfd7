"""Per-adventure turn locks (bot/store/turnlock.py): one turn at a time per session, across processes on
PostgreSQL, never left behind by a connection that dies; an in-process lock on SQLite."""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.store.turnlock import NAMESPACE, AdvisoryTurnLocks, LocalTurnLocks, lock_key, namespace_for
from tests.services import PG_ADMIN_DSN, require


async def lock_holders(session_id: int) -> int:
    """How many connections hold this session's turn lock right now (pg_locks, the server's own view)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        ns, key = lock_key(session_id)
        return await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                                   "classid = ($1::bigint & 4294967295)::text::oid AND "
                                   "objid = ($2::bigint & 4294967295)::text::oid AND objsubid = 2", ns, key)
    finally:
        await conn.close()


def test_schemas_of_one_database_get_their_own_lock_keys():
    assert namespace_for("postgresql://h/db") == NAMESPACE
    kept_apart = {namespace_for(f"postgresql://h/db?search_path=s{i}") for i in range(50)}
    assert len(kept_apart) == 50 and NAMESPACE not in kept_apart
    assert all(-(2**31) <= n < 2**31 for n in kept_apart)


def test_keys_fit_postgres_int4_and_keep_small_ids():
    assert lock_key(7) == (NAMESPACE, 7)
    for session_id in (0, 2**31 - 1, 2**31, 2**32 + 5, 2**40):
        assert -(2**31) <= lock_key(session_id)[1] < 2**31


async def test_local_locks_serialize_one_session_and_forget_idle_ones():
    locks, order = LocalTurnLocks(), []

    async def turn(name: str, session: int, hold: float) -> None:
        async with locks.hold(session):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    await asyncio.gather(turn("a", 1, 0.05), turn("b", 1, 0.0), turn("c", 2, 0.0))
    assert order.index("a-") < order.index("b+"), order  # one session: one after the other
    assert order.index("c+") < order.index("a-"), order  # another session does not wait
    assert locks._locks == {}


@pytest.fixture
async def two_processes():
    """Two lock holders with their own connections, as two bot processes have."""
    require("postgresql")
    first, second = AdvisoryTurnLocks(PG_ADMIN_DSN), AdvisoryTurnLocks(PG_ADMIN_DSN)
    yield first, second
    await first.close()
    await second.close()


SESSION = 2**31 + random.randrange(2**30)  # far from real sessions' small ids, and from other test runs


async def test_a_session_lock_holds_across_processes(two_processes):
    first, second = two_processes
    order = []

    async def turn(locks: AdvisoryTurnLocks, name: str, hold: float) -> None:
        async with locks.hold(SESSION):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    one = asyncio.create_task(turn(first, "a", 0.3))
    await asyncio.sleep(0.05)
    await asyncio.gather(one, turn(second, "b", 0.0))
    assert order == ["a+", "a-", "b+", "b-"]
    assert second.waits >= 1, "the second process had to wait for the first"
    async with second.hold(SESSION + 1):  # other sessions are independent
        assert await first.try_hold(SESSION + 2)
        await first.release(SESSION + 2)
    assert await lock_holders(SESSION) == 0 and await lock_holders(SESSION + 1) == 0


async def test_a_dead_connection_leaves_no_lock(two_processes):
    first, second = two_processes
    entered = asyncio.Event()

    async def dies_mid_turn() -> None:
        async with first.hold(SESSION):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(dies_mid_turn())
    await entered.wait()
    assert not await second.try_hold(SESSION)
    assert await lock_holders(SESSION) == 1
    first._conn.terminate()  # the socket closes as it does when the process is killed
    async with asyncio.timeout(5):
        async with second.hold(SESSION):
            pass  # taken as soon as the server noticed
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_turn_cancelled_while_holding_or_waiting_lets_go(two_processes):
    first, second = two_processes
    entered = asyncio.Event()

    async def holder() -> None:
        async with first.hold(SESSION):
            entered.set()
            await asyncio.sleep(30)

    held = asyncio.create_task(holder())
    await entered.wait()
    waiter = asyncio.create_task(second.hold(SESSION).__aenter__())
    await asyncio.sleep(0.1)
    waiter.cancel()  # a turn stopped while it waited
    held.cancel()  # and the holder stopped mid-turn (shutdown)
    await asyncio.gather(held, waiter, return_exceptions=True)
    assert first.held == set() and second.held == set()
    assert await lock_holders(SESSION) == 0, "nothing was left behind"
    assert await second.try_hold(SESSION)
    await second.release(SESSION)


async def test_waiting_turns_are_served_in_arrival_order(two_processes):
    """A's turn holds the lock; B's turn arrives, then A's next one: B goes first (PostgreSQL's lock queue), as
    the players sent them, instead of A taking its own lock again the moment it lets go."""
    first, second = two_processes
    order = []

    async def turn(locks: AdvisoryTurnLocks, name: str, hold: float) -> None:
        async with locks.hold(SESSION):
            order.append(name)
            await asyncio.sleep(hold)

    one = asyncio.create_task(turn(first, "a1", 0.3))
    await asyncio.sleep(0.05)
    two = asyncio.create_task(turn(second, "b1", 0.05))
    await asyncio.sleep(0.1)
    three = asyncio.create_task(turn(first, "a2", 0.0))
    await asyncio.gather(one, two, three)
    assert order == ["a1", "b1", "a2"]
    assert await lock_holders(SESSION) == 0
