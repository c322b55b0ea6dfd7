"""Budgets that hold across processes (issue 12 item 3; issue 11's caps), on both backends: the estimate is held
against the adventure, the player's UTC day and the server's UTC month in one transaction, so concurrent
turns (two stores = two processes) never pass a cap together; the hold is settled with the reported usage; the
day and the month start again on time (injected clock)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from bot.dm.events import Done, Failed
from bot.dm.guards import CapLimits, RetryPolicy, TokenBudget, day_and_month
from bot.dm.service import DMService
from bot.llm.base import Usage
from bot.store.base import CallRecord, CapReached, Channel, Player, Reservation, TokenCap
from bot.store.tokens import STALE_SECONDS
from tests.fakes import FakeSleep, ScriptedProvider, reply
from tests.unit.conftest import make_config

HALL = Channel("g1", "hall")
CRYPT = Channel("g1", "crypt")
ARIA = Player("u1", "Aria")
BRAM = Player("u2", "Bram")
NOW = datetime(2026, 12, 31, 23, 58, tzinfo=timezone.utc).timestamp()  # two minutes before a new day and month


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


async def run(stream) -> list:
    return [event async for event in stream]


def test_day_and_month_periods_end_at_utc_midnight_and_the_first_of_the_month():
    assert day_and_month(NOW) == ("2026-12-31", utc(2027, 1, 1), "2026-12", utc(2027, 1, 1))
    assert day_and_month(utc(2027, 2, 10, 12)) == ("2027-02-10", utc(2027, 2, 11), "2027-02", utc(2027, 3, 1))


async def test_concurrent_reservations_from_two_processes_never_pass_a_counter_cap(opened):
    a, b = await opened(), await opened()  # two processes over one database
    sessions = [await a.start_session(Channel("g1", f"c{i}"), ARIA, "p") for i in range(10)]
    cap = TokenCap("server_month", 10_000, "guild:g1:2026-12", utc(2027, 1, 1))
    first = await a.reserve_tokens(sessions[0].id, 4_600, [cap], now=NOW)  # nearly spent: 5,400 left
    assert isinstance(first, Reservation)

    async def reserve(store, session):
        return await store.reserve_tokens(session.id, 1_000, [cap], now=NOW)

    results = await asyncio.gather(*(reserve(a if i % 2 else b, s) for i, s in enumerate(sessions)))
    held = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, CapReached)]
    assert len(held) == 5 and len(refused) == 5  # 4,600 + 5 x 1,000 fits; a sixth would not
    assert all(r.cap == cap and r.used == 9_600 and r.needed == 1_000 for r in refused)
    assert await a.counter_used("guild:g1:2026-12") == (0, 9_600)
    for reservation in [first, *held]:
        await b.settle_reservation(reservation, 300)  # the calls used less than their estimates
    assert await a.counter_used("guild:g1:2026-12") == (1_800, 0)


async def test_the_adventure_budget_counts_the_ledger_and_holds_of_calls_in_flight(opened):
    a, b = await opened(), await opened()
    session = await a.start_session(HALL, ARIA, "p")
    turn = await a.begin_turn(session.id, ARIA, "x")
    await a.complete_turn(session.id, turn, "y", [CallRecord("fake", "m", Usage(7_000, 1_000), None)], [])
    cap = TokenCap("adventure", 10_000)
    results = await asyncio.gather(*(s.reserve_tokens(session.id, 1_500, [cap], now=NOW) for s in (a, b, a, b)))
    assert sum(isinstance(r, Reservation) for r in results) == 1  # 8,000 + 1,500 fits; 8,000 + 3,000 does not
    reached = next(r for r in results if isinstance(r, CapReached))
    assert reached.used == 9_500 and "9,500 of its 10,000" in TokenBudget.cap_refusal(reached)


async def test_a_hold_left_by_a_dead_process_is_taken_as_spent_when_stale(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "p")
    cap = TokenCap("player_day", 5_000, "player:u1:2026-12-31", utc(2027, 1, 1))
    assert isinstance(await store.reserve_tokens(session.id, 2_000, [cap], now=NOW), Reservation)  # never settled
    assert await store.counter_used("player:u1:2026-12-31") == (0, 2_000)
    later = NOW + STALE_SECONDS + 1
    assert isinstance(await store.reserve_tokens(session.id, 100, [cap], now=later), Reservation)
    assert await store.counter_used("player:u1:2026-12-31") == (2_000, 100)


def set_caps(service: DMService, **caps: int) -> None:
    """Change the caps in force (the hook an admin's per-server settings go through)."""
    async def limits(guild_id):
        return CapLimits(**caps)

    service.budget.limits_for = limits


def _service(store, provider, clock, **limits) -> DMService:
    config = make_config(limits={"tokens_per_session": 1_000_000, **limits}, llm={"max_output_tokens": 200})
    service = DMService(config, store, provider, retry=RetryPolicy(config.retry, sleep=FakeSleep()))
    service.budget.clock = clock
    return service


async def test_a_players_daily_cap_refuses_with_its_reset_time_and_lets_the_next_day_through(opened):
    store = await opened()
    now = [NOW]
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=1_000, output_tokens=200))
    service = _service(store, provider, lambda: now[0], daily_tokens_per_player=3_000)
    assert isinstance((await run(service.start(HALL, ARIA, "premise")))[-1], Done)  # the opening counts for Aria
    assert isinstance((await run(service.act(HALL, ARIA, "I look")))[-1], Done)
    calls = provider.calls
    refused, = await run(service.act(HALL, ARIA, "I look again"))
    assert isinstance(refused, Failed) and refused.kind == "budget"
    assert "daily allowance of 3,000 tokens" in refused.message
    assert f"<t:{int(utc(2027, 1, 1))}:R>" in refused.message
    assert provider.calls == calls
    assert isinstance((await run(service.act(HALL, BRAM, "I help")))[-1], Done)  # Bram has his own day
    now[0] = utc(2027, 1, 1, 0, 1)
    assert isinstance((await run(service.act(HALL, ARIA, "I look again")))[-1], Done)
    assert await store.counter_used("player:u1:2026-12-31") == (2_400, 0)  # settled with the reported usage


async def test_two_concurrent_actions_against_a_nearly_spent_server_month(opened):
    store_a, store_b = await opened(), await opened()
    now = [NOW]
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=1_000, output_tokens=200))
    a = _service(store_a, provider, lambda: now[0])  # two bot processes, one server-month cap set below
    b = _service(store_b, provider, lambda: now[0])
    held: list[int] = []
    reserve = store_a.reserve_tokens

    async def spy(session_id, tokens, caps, *, now):
        held.append(tokens)
        return await reserve(session_id, tokens, caps, now=now)

    store_a.reserve_tokens = spy
    assert isinstance((await run(a.start(HALL, ARIA, "one")))[-1], Done)
    assert isinstance((await run(b.start(CRYPT, BRAM, "two")))[-1], Done)  # 2 x 1,200 used
    estimate = held[0]  # an action's estimate is a little larger (it adds two short turns)
    cap = 2 * 1_200 + estimate * 3 // 2  # room for one action, not two
    for service in (a, b):
        set_caps(service, monthly_per_server=cap)
    first, second = await asyncio.gather(run(a.act(HALL, ARIA, "go")), run(b.act(CRYPT, BRAM, "go")))
    outcomes = sorted(type(events[-1]).__name__ for events in (first, second))
    assert outcomes == ["Done", "Failed"]
    refused = next(events[-1] for events in (first, second) if isinstance(events[-1], Failed))
    assert "This server has used" in refused.message and f"monthly allowance of {cap:,}" in refused.message
    assert f"<t:{int(utc(2027, 1, 1))}:R>" in refused.message
    used, still_held = await store_a.counter_used("guild:g1:2026-12")
    assert still_held == 0 and used == 3 * 1_200
    now[0] = utc(2027, 1, 1, 0, 0, 1)  # a new month
    assert isinstance((await run(b.act(CRYPT, BRAM, "go")))[-1], Done)


async def test_holds_and_settlements_racing_on_shared_counters_never_deadlock(opened):
    stores = [await opened(), await opened()]
    sessions = [await stores[0].start_session(Channel("g1", f"c{i}"), Player(f"u{i % 2}", "P"), "p")
                for i in range(8)]
    caps = [TokenCap("player_day", 0, "player:u1:2026-12-31", utc(2027, 1, 1)),
            TokenCap("server_month", 0, "guild:g1:2026-12", utc(2027, 1, 1))]

    async def channel(i, session):
        store = stores[i % 2]
        for _ in range(10):
            held = await store.reserve_tokens(session.id, 500, [TokenCap("adventure", 10**9), *caps], now=NOW)
            await store.settle_reservation(held, 100)

    await asyncio.wait_for(asyncio.gather(*(channel(i, s) for i, s in enumerate(sessions))), 30)
    assert await stores[1].counter_used("guild:g1:2026-12") == (8_000, 0)
    assert await stores[1].counter_used("player:u1:2026-12-31") == (8_000, 0)


async def test_each_further_tool_round_grows_the_hold_or_ends_the_turn(opened):
    """A turn's DM roll needs a second LLM call: its estimate is held too, so a turn cannot run a cap over by
    more than one call; with no room, the turn ends with what was said and rolled."""
    from bot.dm.events import RollMade
    from bot.llm.base import Finish, TextChunk, ToolCall

    def with_roll():
        return [TextChunk("The goblin swings. "), ToolCall("t1", "roll_dice", {"notation": "1d20+4"}),
                Usage(2_000, 30), Finish("tool_calls")]

    store = await opened()
    provider = ScriptedProvider(with_roll(), reply("It hits!", input_tokens=2_100, output_tokens=20))
    service = _service(store, provider, lambda: NOW)
    events = await run(service.start(HALL, ARIA, "premise"))
    assert isinstance(events[-1], Done) and provider.calls == 2  # room enough: both rounds ran
    used = (await store.usage_totals(1)).usage.total
    assert await store.counter_used("player:u1:2026-12-31") == (used, 0)

    # now leave room for the first call of the next turn (its estimate is under 2,300), not for a second round
    set_caps(service, daily_per_player=used + 2_300)
    provider.script = [with_roll(), reply("never asked")]
    events = await run(service.act(HALL, ARIA, "I duck"))
    assert isinstance(events[-1], Done) and provider.calls == 3  # the second round was not called
    assert any(isinstance(e, RollMade) for e in events)
    stored = [(t.role, t.content) for t in await store.turns(1)][-3:]
    assert stored[0] == ("player", "I duck") and stored[1][0] == "roll" and stored[2] == ("dm", "The goblin swings.")
    charged, held = await store.counter_used("player:u1:2026-12-31")
    assert held == 0 and charged == used + 2_030


async def test_a_servers_own_caps_from_config_are_the_ones_held_against(opened):
    store = await opened()
    await store.set_guild_settings("g1", {"player_daily_budget": 1_500}, "admin")  # what /config stores
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=1_000, output_tokens=200))
    service = _service(store, provider, lambda: NOW, daily_tokens_per_player=1_000_000)
    assert isinstance((await run(service.start(HALL, ARIA, "premise")))[-1], Done)
    refused, = await run(service.act(HALL, ARIA, "again"))
    assert refused.kind == "budget" and "daily allowance of 1,500 tokens" in refused.message
