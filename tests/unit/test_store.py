"""The store on both backends (SQLite files, and PostgreSQL when it runs): migrations, all-or-nothing turns,
concurrent writers, crash recovery. Every test here that takes ``opened`` runs once per backend."""

from __future__ import annotations

import asyncio
import pytest

from bot.llm.base import Usage
from bot.store.base import CallRecord, Channel, Player, RollRecord, SessionExists
from bot.store.sqlite import MIGRATIONS

HALL = Channel("g1", "hall")
ARIA = Player("u1", "Aria")
CALL = CallRecord("anthropic", "claude-sonnet-4-5", Usage(100, 20, 5, 1), 0.0004)


async def test_migrates_an_empty_database_and_reopens_without_migrating_again(opened, database_url):
    store = await opened()
    assert await store.schema_version() == len(MIGRATIONS)
    await store.start_session(HALL, ARIA, "premise")
    await store.close()
    store = await opened()
    assert await store.schema_version() == len(MIGRATIONS)
    assert (await store.active_session("hall")).premise == "premise"
    if database_url.startswith("sqlite"):
        mode = (await (await store.db.execute("PRAGMA journal_mode")).fetchone())[0]
        assert mode == "wal"
    await store.close()


async def test_one_active_session_per_channel(opened):
    store = await opened()
    first = await store.start_session(HALL, ARIA, "one")
    with pytest.raises(SessionExists):
        await store.start_session(HALL, ARIA, "two")
    await store.end_session(first.id, ARIA)
    second = await store.start_session(HALL, ARIA, "three")
    assert second.id != first.id and (await store.active_session("hall")).premise == "three"
    await store.close()


async def test_a_turn_is_all_or_nothing(opened, monkeypatch):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    player_turn = await store.begin_turn(session.id, ARIA, "I open the door")
    original = store._insert_calls

    async def broken(*args, **kwargs):
        await original(*args, **kwargs)
        raise OSError("disk I/O error")  # fails after the turn rows were written

    monkeypatch.setattr(store, "_insert_calls", broken)
    roll = RollRecord(Player("dm", "The DM"), "1d20", 12, "1d20 (12) = `12`", "attack", "The DM rolled 12", True)
    with pytest.raises(OSError):
        await store.complete_turn(session.id, player_turn, "The door creaks.", [CALL], [roll])
    assert [(t.role, t.status) for t in await store.all_turns(session.id)] == [("player", "pending")]
    assert (await store.usage_totals(session.id)).calls == 0
    assert await store.count_rows("rolls") == 0

    monkeypatch.setattr(store, "_insert_calls", original)
    await store.complete_turn(session.id, player_turn, "The door creaks.", [CALL], [roll])
    assert [(t.role, t.status) for t in await store.all_turns(session.id)] == [
        ("player", "complete"), ("roll", "complete"), ("dm", "complete")]
    assert (await store.usage_totals(session.id)).usage == CALL.usage
    await store.close()


async def test_pending_turns_left_by_a_crash_are_interrupted_on_open(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    await store.begin_turn(session.id, ARIA, "I jump")
    await store.close()  # as if the process died before the DM answered
    store = await opened()
    assert store.interrupted_on_open == 1
    assert [t.status for t in await store.all_turns(session.id)] == ["interrupted"]
    assert await store.turns(session.id) == []  # never sent to the model
    await store.close()


async def test_concurrent_writers_in_one_process_keep_every_turn_in_order(opened):
    store = await opened()
    sessions = [await store.start_session(Channel("g", f"c{i}"), ARIA, "p") for i in range(4)]

    async def play(session, n):
        for k in range(n):
            turn = await store.begin_turn(session.id, ARIA, f"action {k}")
            await store.complete_turn(session.id, turn, f"answer {k}", [CALL], [])

    await asyncio.gather(*(play(s, 25) for s in sessions))
    for session in sessions:
        turns = await store.turns(session.id)
        assert [t.content for t in turns] == [x for k in range(25) for x in (f"action {k}", f"answer {k}")]
        assert [t.seq for t in turns] == list(range(1, 51))
        assert (await store.usage_totals(session.id)).calls == 25
    await store.close()


async def test_two_stores_on_one_database_wait_for_each_other(opened):
    a, b = await opened(), await opened()
    session = await a.start_session(HALL, ARIA, "p")

    async def write(store, tag):
        for k in range(30):
            turn = await store.begin_turn(session.id, ARIA, f"{tag}{k}")
            await store.complete_turn(session.id, turn, f"{tag}{k}!", [CALL], [])

    await asyncio.gather(write(a, "a"), write(b, "b"))
    turns = await a.turns(session.id)
    assert len(turns) == 120 and len({t.seq for t in turns}) == 120
    assert (await b.usage_totals(session.id)).calls == 60
    await a.close()
    await b.close()


async def test_player_rolls_outside_a_session_are_kept_but_make_no_turn(opened):
    store = await opened()
    roll = RollRecord(ARIA, "1d6", 4, "1d6 (4) = `4`", None, "Aria rolled 1d6: 4")
    await store.add_roll(HALL, None, roll)
    session = await store.start_session(HALL, ARIA, "p")
    await store.add_roll(HALL, session.id, roll)
    assert [t.role for t in await store.turns(session.id)] == ["roll"]
    assert await store.count_rows("rolls") == 2
    await store.close()


async def test_meta(opened):
    store = await opened()
    assert await store.get_meta("commands") is None
    await store.set_meta("commands", "abc")
    await store.set_meta("commands", "def")
    assert await store.get_meta("commands") == "def"
    await store.close()
