"""The store on both backends (SQLite files, and PostgreSQL when it runs): migrations, all-or-nothing turns,
concurrent writers, crash recovery. Every test here that takes ``opened`` runs once per backend."""

from __future__ import annotations

import asyncio
import time
import pytest

from bot.llm.base import Usage
from bot.store import store_for
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


# -- issue 9's store interface (estimated usage, rolls of failed turns, held rolls), on both backends ----------

PLAYER_ROLL = RollRecord(ARIA, "1d20", 15, "1d20 (15) = `15`", "Perception", "Aria rolled 1d20 for Perception: 15")
DM_ROLL = RollRecord(Player("dm", "The DM"), "1d8", 6, "1d8 (6) = `6`", "bite", "The DM rolled 1d8: 6", True)


async def test_a_roll_made_while_the_dm_answers_enters_the_story_after_the_answer(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    turn = await store.begin_turn(session.id, ARIA, "I listen at the door")
    await store.add_roll(HALL, session.id, PLAYER_ROLL, held=True)  # the DM is still answering
    assert [t.role for t in await store.turns(session.id)] == []  # not in the story yet
    await store.complete_turn(session.id, turn, "You hear breathing.", [CALL], [DM_ROLL])
    turns = await store.turns(session.id)
    assert [(t.role, t.content) for t in turns] == [
        ("player", "I listen at the door"), ("roll", DM_ROLL.summary), ("dm", "You hear breathing."),
        ("roll", PLAYER_ROLL.summary)]
    assert [t.seq for t in turns] == sorted(t.seq for t in turns)


async def test_a_failed_turn_keeps_its_dm_rolls_and_releases_held_rolls(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    turn = await store.begin_turn(session.id, ARIA, "I attack")
    await store.add_roll(HALL, session.id, PLAYER_ROLL, held=True)
    await store.fail_turn(session.id, turn, [CALL], rolls=[DM_ROLL])
    assert await store.count_rows("rolls") == 2  # the DM's roll was shown: it counts as made
    assert [(t.role, t.status) for t in await store.all_turns(session.id)] == [
        ("player", "failed"), ("roll", "failed"), ("roll", "complete")]  # the DM's roll: made, not in the story
    assert [t.content for t in await store.turns(session.id)] == [PLAYER_ROLL.summary]


async def test_a_roll_racing_the_end_of_an_adventure_is_kept_outside_the_story(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    await store.end_session(session.id, ARIA)
    assert await store.add_roll(HALL, session.id, PLAYER_ROLL) is False
    assert await store.count_rows("rolls") == 1 and await store.all_turns(session.id) == []


async def test_on_open_held_rolls_are_kept_and_cut_actions_interrupted(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    await store.begin_turn(session.id, ARIA, "I run")
    await store.add_roll(HALL, session.id, PLAYER_ROLL, held=True)
    await store.close()  # the process stops mid-turn
    store = await opened()
    assert [(t.role, t.status) for t in await store.all_turns(session.id)] == [
        ("player", "interrupted"), ("roll", "complete")]


async def test_estimated_usage_is_marked_and_totalled(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    turn = await store.begin_turn(session.id, ARIA, "x")
    guessed = CallRecord("openai", "llama3.1", Usage(400, 50), None, estimated=True)
    await store.complete_turn(session.id, turn, "y", [CALL, guessed], [])
    totals = await store.usage_totals(session.id)
    assert totals.usage.total == CALL.usage.total + 450 and totals.estimated_tokens == 450 and totals.calls == 2


async def test_postgresql_leaves_pending_turns_alone_while_another_process_runs(postgres_url):
    """Several processes over one database is PostgreSQL's case (SQLite is one process per file). A turn is
    pending exactly while its process holds the adventure's turn lock (DMService takes it before storing the
    action): another process starting meanwhile leaves it alone; once the lock's holder is gone (it died, or
    stopped), a process that starts marks it interrupted, even with other processes still running."""
    stores = []

    async def opened():
        stores.append(store_for(postgres_url))
        await stores[-1].open()
        return stores[-1]

    first = await opened()  # a running bot process, answering a turn
    session = await first.start_session(HALL, ARIA, "p")
    answering = first.turn_lock(session.id)
    await answering.__aenter__()
    await first.begin_turn(session.id, ARIA, "I am being answered")
    second = await opened()  # another shard starts meanwhile
    assert second.interrupted_on_open == 0
    assert [t.status for t in await second.all_turns(session.id)] == ["pending"]
    await first.close()  # the first process goes away mid-turn: its connections, and its lock, with it
    third = await opened()  # a process starting while the second still runs
    assert third.interrupted_on_open == 1
    assert [t.status for t in await third.all_turns(session.id)] == ["interrupted"]
    await second.close()
    await third.close()


async def test_admin_settings_and_usage_reports_on_both_backends(opened):
    """Issue 11's queries (bot/store/admin_queries.py) run on the shared store: per-server settings and a month's
    usage by channel, player and day."""
    store = await opened()
    await store.set_guild_settings("g1", {"persona": "a gruff dwarf", "monthly_budget": 50_000}, "admin")
    await store.set_guild_settings("g1", {"monthly_budget": 60_000}, "admin")
    assert await store.guild_settings("g1") == {"persona": "a gruff dwarf", "monthly_budget": 60_000}
    session = await store.start_session(HALL, ARIA, "p")
    for player, tokens in ((ARIA, 100), (Player("u2", "Bram"), 300)):
        turn = await store.begin_turn(session.id, player, "x")
        await store.complete_turn(session.id, turn, "y", [CallRecord("fake", "m", Usage(tokens, 0), 0.5)], [])
    total = await store.guild_usage_total("g1", 0, 2**40)
    assert (total.tokens, total.calls, total.cost_usd) == (400, 2, 1.0)
    by_player = await store.guild_usage_by_player("g1", 0, 2**40)
    assert [(line.key, line.tokens) for line in by_player] == [("u2", 300), ("u1", 100)]
    assert [(line.key, line.tokens) for line in await store.guild_usage_by_channel("g1", 0, 2**40)] == [("hall", 400)]
    today = time.time() // 86_400 * 86_400  # this UTC day's midnight
    assert await store.guild_usage_daily("g1", today - 86_400, today + 86_400) == {1: 400}
    assert await store.count_active_sessions() == 1


async def test_campaign_memory_tables_on_both_backends(opened):
    """Issue 14's queries (bot/store/memory_queries.py): the summary and its marker, pins with stable numbers
    and their limit, the story-turn counts the window is cut from; all of it survives a reopen."""
    from bot.store.base import RollRecord

    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    for n in range(3):
        turn = await store.begin_turn(session.id, ARIA, f"act {n}")
        await store.complete_turn(session.id, turn, f"answer {n}", [], [])
        await store.add_roll(HALL, session.id, RollRecord(ARIA, "1d20", 5, "5", None, f"roll {n}"))
    assert await store.count_story_turns(session.id) == 6
    second = await store.story_turn_seq(session.id, 1)
    assert [t.content for t in await store.turns_after(session.id, second)][:2] == ["roll 0", "act 1"]
    assert [t.content for t in await store.last_turns(session.id, 2)] == ["answer 2", "roll 2"]
    await store.save_summary(session.id, "KEY FACTS\n- x", second, [CallRecord("fake", "cheap", Usage(50, 10), None)])
    await store.save_summary(session.id, "KEY FACTS\n- y", second + 3, [])
    assert [await store.add_pin(session.id, ARIA, f"fact {i}", 2) is not None for i in range(3)] == [True, True, False]
    await store.remove_pin(session.id, 1)
    assert (await store.add_pin(session.id, ARIA, "again", 2)).number == 3
    again = await opened()
    state = await again.summary(session.id)
    assert (state.text, state.folded_seq) == ("KEY FACTS\n- y", second + 3)
    assert [(p.number, p.text) for p in await again.pins(session.id)] == [(2, "fact 1"), (3, "again")]
    assert (await again.usage_totals(session.id)).usage.total == 60  # the summary call is in the ledger
    # What a narration request reads, in one snapshot: the summary, the turns it has not folded, the pins.
    state, turns, pins = await again.story_context(session.id)
    assert state.folded_seq == second + 3
    assert turns == await again.turns_after(session.id, second + 3) and turns[0].seq == second + 4
    assert [p.number for p in pins] == [2, 3]
    fresh = await again.start_session(Channel("g1", "elsewhere"), ARIA, "p")
    assert await again.story_context(fresh.id) == (None, [], [])
    # What a turn reads before its request (Store.turn_context): the adventure, its party's document, its story.
    await again.change_party_state(session.id, None, lambda data: ('{"characters": []}', [], None))
    context = await again.turn_context(HALL.channel_id)
    assert (context.session, context.party) == (await again.active_session(HALL.channel_id), '{"characters": []}')
    assert context.story == (state, turns, pins)
    assert (await again.turn_context(HALL.channel_id, story=False)).story is None
    assert await again.turn_context("no-such-channel") is None
