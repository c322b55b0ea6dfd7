"""DMService with a scripted fake provider and a real SQLite file: the order of the guards and what a player
sees (the events) and what must hold (calls made, the ledger, the stored story)."""

from __future__ import annotations

import asyncio

from bot.dm.events import Done, Failed, Reset, Retrying, RollMade, TextDelta, UsageReport
from bot.dm.guards import RetryPolicy
from bot.dm.service import DMService
from bot.llm.base import Finish, TextChunk, ToolCall, Usage
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore
from tests.fakes import Gate, ScriptedProvider, bad_request, overloaded, rate_limited, reply
from tests.unit.conftest import make_config

HALL = Channel("g1", "hall")
CRYPT = Channel("g1", "crypt")
ARIA = Player("u1", "Aria")
BRAM = Player("u2", "Bram")


async def run(stream) -> list:
    return [event async for event in stream]


def text_of(events) -> str:
    """What a player finally sees: deltas, with everything before a Reset dropped."""
    shown = ""
    for event in events:
        if isinstance(event, Reset):
            shown = ""
        elif isinstance(event, TextDelta):
            shown += event.text
    return shown


async def open_session(service, channel=HALL, starter=ARIA, premise="A heist in a floating city"):
    events = await run(service.start(channel, starter, premise))
    assert isinstance(events[-1], Done), events
    return events


async def test_start_streams_the_opening_and_stores_it(make_service, store):
    provider = ScriptedProvider(reply("Rain hammers the docks of Vell."))
    events = await open_session(make_service(provider))
    assert text_of(events) == "Rain hammers the docks of Vell."
    assert "A heist in a floating city" in provider.requests[0].messages[0].text
    session = await store.active_session("hall")
    turns = await store.turns(session.id)
    assert [(t.role, t.content) for t in turns] == [("dm", "Rain hammers the docks of Vell.")]


async def test_a_second_start_is_refused_without_a_call(make_service):
    provider = ScriptedProvider()
    service = make_service(provider)
    await open_session(service)
    events = await run(service.start(HALL, BRAM, "another"))
    assert [type(e) for e in events] == [Failed]
    assert events[0].kind == "session_active" and "Aria" in events[0].message
    assert provider.calls == 1


async def test_act_without_session_is_refused(make_service):
    provider = ScriptedProvider()
    events = await run(make_service(provider).act(HALL, ARIA, "I look around"))
    assert events == [Failed("no_session", events[0].message)]
    assert "/start" in events[0].message
    assert provider.calls == 0


async def test_bad_actions_are_refused_with_what_is_wrong(make_service):
    provider = ScriptedProvider()
    service = make_service(provider, dm={"max_action_chars": 50})
    await open_session(service)
    empty, = await run(service.act(HALL, ARIA, "   "))
    long, = await run(service.act(HALL, ARIA, "x" * 51))
    assert empty.kind == long.kind == "invalid"
    assert "empty" in empty.message
    assert "51 characters" in long.message and "50" in long.message
    assert provider.calls == 1


async def test_turns_in_one_channel_are_serialized_and_see_each_other(make_service):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [TextChunk("Aria finds"), gate, TextChunk(" a key."),
                                                   Usage(50, 5), Finish("stop")], reply("Bram sees the key."))
    service = make_service(provider)
    await open_session(service)
    first = asyncio.create_task(run(service.act(HALL, ARIA, "I search the desk")))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(run(service.act(HALL, BRAM, "I watch the door")))
    await asyncio.sleep(0.05)
    assert provider.calls == 2  # the second action waits for the first: no call yet
    gate.open()
    await asyncio.gather(first, second)
    assert provider.max_in_flight == 1
    last = provider.requests[2].messages
    assert [m.role for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert last[2].text == "Aria: I search the desk"
    assert last[3].text == "Aria finds a key."
    assert last[4].text == "Bram: I watch the door"


async def test_different_channels_run_in_parallel(make_service):
    gates = [Gate(), Gate()]
    provider = ScriptedProvider(reply("Hall opening."), reply("Crypt opening."),
                                [gates[0], *reply("Hall answer.")], [gates[1], *reply("Crypt answer.")])
    service = make_service(provider)
    await open_session(service, HALL)
    await open_session(service, CRYPT, BRAM)
    tasks = [asyncio.create_task(run(service.act(HALL, ARIA, "a"))),
             asyncio.create_task(run(service.act(CRYPT, BRAM, "b")))]
    await asyncio.sleep(0.05)
    assert provider.in_flight == 2
    for gate in gates:
        gate.open()
    hall, crypt = await asyncio.gather(*tasks)
    assert text_of(hall) == "Hall answer." and text_of(crypt) == "Crypt answer."


async def test_rate_limit_refuses_without_a_call_and_says_when(make_service):
    provider = ScriptedProvider()
    service = make_service(provider, limits={"requests_per_minute": 2})
    await open_session(service)
    await run(service.act(HALL, ARIA, "one"))
    calls = provider.calls
    refused, = await run(service.act(HALL, ARIA, "two"))
    assert refused.kind == "rate_limited"
    assert 1 <= refused.retry_after <= 60
    assert f"{refused.retry_after:.0f} s" in refused.message
    assert provider.calls == calls
    # another channel has its own window
    assert isinstance((await run(service.start(CRYPT, BRAM, "x")))[-1], Done)


async def test_budget_refuses_without_a_call_and_says_used_and_limit(make_service):
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=1500, output_tokens=200))
    service = make_service(provider, limits={"tokens_per_session": 2500}, llm={"max_output_tokens": 200})
    await open_session(service)
    calls = provider.calls
    refused, = await run(service.act(HALL, ARIA, "I push on"))
    assert refused.kind == "budget"
    assert "1,700" in refused.message and "2,500" in refused.message
    assert provider.calls == calls


async def test_ledger_equals_reported_usage_including_failed_attempts(make_service, store):
    provider = ScriptedProvider(
        [Usage(input_tokens=300, cache_read_tokens=40, cache_write_tokens=7), TextChunk("Hal"), overloaded()],
        [Usage(300, 0, 40, 7), TextChunk("Hello"), Usage(300, 25, 40, 7), Finish("stop")],
    )
    service = make_service(provider)
    events = await open_session(service)
    reported = [e.usage for e in events if isinstance(e, UsageReport)]
    session = await store.active_session("hall")
    totals = await store.usage_totals(session.id)
    assert totals.usage == Usage(600, 25, 80, 14)  # the failed attempt's input is charged too
    assert totals.calls == 2
    assert reported == [Usage(300, 25, 40, 7)]


async def test_overloaded_then_success_is_exactly_two_calls(make_service, sleep):
    provider = ScriptedProvider([overloaded()], reply("Made it."))
    events = await open_session(make_service(provider))
    assert provider.calls == 2
    assert text_of(events) == "Made it."
    assert len(sleep.waits) == 1 and 1.0 <= sleep.waits[0] <= 2.0  # initial backoff plus jitter


async def test_bad_request_is_one_call_and_a_clear_error(make_service, store):
    provider = ScriptedProvider([bad_request()])
    events = await run(make_service(provider).start(HALL, ARIA, "x"))
    assert provider.calls == 1
    failed = events[-1]
    assert failed.kind == "rejected" and "invalid (400)" in failed.message


async def test_retry_after_is_honoured(make_service, sleep):
    provider = ScriptedProvider([rate_limited(7.5)], reply("ok"))
    await open_session(make_service(provider))
    assert provider.calls == 2
    assert sleep.waits == [7.5]


async def test_retry_after_beyond_the_cap_stops_and_says_when(make_service, sleep):
    provider = ScriptedProvider([rate_limited(120)])
    events = await run(make_service(provider, retry={"max_retry_after_seconds": 30}).start(HALL, ARIA, "x"))
    assert provider.calls == 1 and sleep.waits == []
    failed = events[-1]
    assert failed.kind == "retry_later" and failed.retry_after == 120 and "120 s" in failed.message


async def test_retries_stop_after_the_configured_attempts(make_service, store):
    provider = ScriptedProvider([overloaded()], [overloaded()], [overloaded()], [overloaded()])
    service = make_service(provider, retry={"attempts": 3})
    events = await run(service.start(HALL, ARIA, "x"))
    assert provider.calls == 3
    assert events[-1].kind == "unavailable" and "overloaded (529)" in events[-1].message


async def test_reset_comes_before_a_retry_that_follows_partial_text(make_service, store):
    provider = ScriptedProvider([Usage(10), TextChunk("The bridge cre"), overloaded()],
                                reply("The bridge holds."))
    events = await open_session(make_service(provider))
    kinds = [type(e).__name__ for e in events if not isinstance(e, UsageReport)]
    assert kinds[:4] == ["TextDelta", "Retrying", "Reset", "TextDelta"]  # told, then the half answer goes
    assert text_of(events) == "The bridge holds."
    session = await store.active_session("hall")
    assert (await store.turns(session.id))[-1].content == "The bridge holds."


async def test_history_survives_closing_and_reopening_the_store(tmp_path, sleep):
    path = str(tmp_path / "campaign.db")
    config = make_config()
    first = SQLiteStore(path)
    await first.open()
    service = DMService(config, first, ScriptedProvider(reply("Opening."), reply("One."), reply("Two.")))
    await open_session(service)
    await run(service.act(HALL, ARIA, "first"))
    await run(service.act(HALL, BRAM, "second"))
    await first.close()

    second = SQLiteStore(path)
    await second.open()
    provider = ScriptedProvider(reply("Three."))
    await run(DMService(config, second, provider).act(HALL, ARIA, "third"))
    await second.close()
    texts = [m.text for m in provider.requests[0].messages[1:]]
    assert texts == ["Opening.", "Aria: first", "One.", "Bram: second", "Two.", "Aria: third"]


async def test_the_dm_rolls_real_dice_through_the_tool(make_service, store):
    provider = ScriptedProvider(
        [TextChunk("The goblin swings. "), ToolCall("t1", "roll_dice", {"notation": "1d20+4", "reason": "goblin attack",
                                                                        "for_whom": "the goblin"}),
         Usage(100, 10), Finish("tool_calls")],
        reply("It hits!"),
    )
    events = await open_session(make_service(provider))
    rolls = [e for e in events if isinstance(e, RollMade)]
    assert len(rolls) == 1 and rolls[0].roll.expression.startswith("1d20+4")
    assert 5 <= rolls[0].roll.total <= 24
    round_two = provider.requests[1].messages
    assert round_two[-2].tool_calls[0].id == "t1"
    result = round_two[-1].tool_results[0]
    assert result.call_id == "t1" and str(rolls[0].roll.total) in result.content and not result.is_error
    session = await store.active_session("hall")
    turns = await store.turns(session.id)
    assert [t.role for t in turns] == ["roll", "dm"]
    assert turns[1].content == "The goblin swings. It hits!"


async def test_a_player_roll_enters_the_next_turn(make_service):
    provider = ScriptedProvider()
    service = make_service(provider)
    await open_session(service)
    outcome = await service.roll(HALL, ARIA, "1d20+3", reason="Stealth")
    assert outcome.in_session
    await run(service.act(HALL, ARIA, "I slip past"))
    last = provider.requests[-1].messages[-1].text
    assert last.startswith("[dice] Aria rolled 1d20+3 for \"Stealth\"")
    assert str(outcome.result.total) in last and last.endswith("Aria: I slip past")


async def test_cancelled_turn_is_marked_interrupted_and_not_stored(make_service, store):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [Usage(80), TextChunk("Half a sen"), gate])
    service = make_service(provider)
    await open_session(service)
    task = asyncio.create_task(run(service.act(HALL, ARIA, "I wait")))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    session = await store.active_session("hall")
    statuses = [(t.role, t.status) for t in await store.all_turns(session.id)]
    assert statuses == [("dm", "complete"), ("player", "interrupted")]
    assert (await store.usage_totals(session.id)).usage.input_tokens == 100 + 80


async def test_end_needs_the_starter_or_manage_channels(make_service):
    service = make_service(ScriptedProvider())
    await open_session(service)
    ok, message = await service.end(HALL, BRAM, can_manage=False)
    assert not ok and "Only Aria" in message
    ok, message = await service.end(HALL, BRAM, can_manage=True)
    assert ok and "over" in message
    ok, message = await service.end(HALL, ARIA, can_manage=False)
    assert not ok and "no adventure" in message


async def test_a_flood_of_actions_beyond_the_queue_is_refused(make_service):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [gate, *reply("slow")])
    service = make_service(provider, limits={"max_queued_turns": 2}, dm={"batch_actions": False})
    await open_session(service)
    tasks = [asyncio.create_task(run(service.act(HALL, ARIA, f"a{i}"))) for i in range(3)]
    await asyncio.sleep(0.05)
    gate.open()
    results = await asyncio.gather(*tasks)
    kinds = [r[-1].kind if isinstance(r[-1], Failed) else "done" for r in results]
    assert sorted(kinds) == ["busy", "done", "done"]


async def test_usage_view(make_service):
    service = make_service(ScriptedProvider(default=lambda r: reply("ok", input_tokens=400, output_tokens=100)),
                           limits={"tokens_per_session": 10_000})
    assert await service.usage(HALL) is None
    await open_session(service)
    view = await service.usage(HALL)
    assert (view.used, view.limit, view.remaining, view.turns) == (500, 10_000, 9_500, 1)


def test_retry_policy_waits_grow_and_stay_capped():
    from bot.config import RetryConfig
    policy = RetryPolicy(RetryConfig(attempts=5, initial_backoff_seconds=1, max_backoff_seconds=3))
    assert policy.asks_too_long(rate_limited(31)) and not policy.asks_too_long(rate_limited(30))


async def test_an_admin_budget_replaces_the_default_for_that_session(make_service):
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=1500, output_tokens=200))
    service = make_service(provider, limits={"tokens_per_session": 2500}, llm={"max_output_tokens": 200})
    assert (await service.set_budget(HALL, 9000, can_manage_server=True))[1].startswith("There is no adventure")
    await open_session(service)
    ok, message = await service.set_budget(HALL, 9000, can_manage_server=False)
    assert not ok and "Manage Server" in message
    assert not (await service.set_budget(HALL, 10, can_manage_server=True))[0]
    ok, message = await service.set_budget(HALL, 9000, can_manage_server=True)
    assert ok and "9,000 tokens (1,700 used, 7,300 left)" in message
    assert isinstance((await run(service.act(HALL, ARIA, "go on")))[-1], Done)
    assert (await service.usage(HALL)).limit == 9000


async def test_a_failed_opening_leaves_no_adventure_behind(make_service, store):
    provider = ScriptedProvider([bad_request()], reply("Second try."))
    service = make_service(provider)
    failed = (await run(service.start(HALL, ARIA, "x")))[-1]
    assert failed.kind == "rejected" and "/start again" in failed.message
    assert await store.active_session("hall") is None
    await open_session(service)


async def test_players_are_told_before_each_retry_and_only_then(make_service):
    provider = ScriptedProvider([overloaded()], [overloaded()], reply("Made it."))
    events = await open_session(make_service(provider))
    notes = [e for e in events if isinstance(e, Retrying)]
    assert notes == [Retrying(2, 3, "Anthropic is overloaded (529)"), Retrying(3, 3, "Anthropic is overloaded (529)")]
    for script, told in (([bad_request()],), 0), (([rate_limited(120)],), 0), (([overloaded()],) * 3, 2):
        events = await run(make_service(ScriptedProvider(*script)).start(CRYPT, BRAM, "x"))
        assert isinstance(events[-1], Failed)
        assert len([e for e in events if isinstance(e, Retrying)]) == told  # never after the last attempt
