"""SQLite's write transactions run as one job each on aiosqlite's thread (bot/store/sqlite.py): what that must
keep true. (The speed it buys is measured in bench/, figure 1: command → LLM request at 200 channels.)"""

from __future__ import annotations

import asyncio

import pytest

from bot.store.base import Channel, Player

HALL = Channel("g1", "hall")
ARIA = Player("u1", "Aria")


async def test_a_body_that_waits_for_anything_but_its_statements_is_refused_and_leaves_nothing(store):
    session = await store.start_session(HALL, ARIA, "p")

    async def waits(tx):
        await tx.execute("INSERT INTO meta (key, value) VALUES ('half', 'written')")
        await asyncio.sleep(0)  # would hold the database's thread (and every other write) hostage

    with pytest.raises(RuntimeError, match="may only await its tx"):
        await store._transaction(waits)
    assert await store.get_meta("half") is None
    await store.begin_turn(session.id, ARIA, "the store goes on")
    assert [t.content for t in await store.all_turns(session.id)] == ["the store goes on"]


async def test_a_write_handed_to_the_thread_finishes_whole_even_if_its_caller_is_cancelled(store):
    session = await store.start_session(HALL, ARIA, "p")
    action = await store.begin_turn(session.id, ARIA, "I open the door")
    writing = asyncio.ensure_future(store.complete_turn(session.id, action, "The door creaks.", [], []))
    await asyncio.sleep(0)  # the job is queued on the thread
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    # Never half of it: the answer and the action's new status were committed together.
    assert [(t.role, t.status) for t in await store.all_turns(session.id)] == [
        ("player", "complete"), ("dm", "complete")]


async def test_a_failing_statement_rolls_back_the_whole_job_and_the_next_write_starts_clean(store):
    session = await store.start_session(HALL, ARIA, "p")

    async def half(tx):
        await tx.execute("INSERT INTO meta (key, value) VALUES ('first', 'x')")
        await tx.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(Exception, match="no_such_table"):
        await store._transaction(half)
    assert await store.get_meta("first") is None
    await store.set_meta("first", "y")  # no transaction was left open on the connection
    assert await store.get_meta("first") == "y"
    assert await store.begin_turn(session.id, ARIA, "on") > 0
