"""The DM's state tools through both real SDKs: one turn in which the model starts a combat (one call), then
attacks, changes a combatant and passes the turn (three calls in one answer), then ends the combat, each
answer an SSE body with streamed tool-argument deltas. The engine carries out each call, the players see each
change, and the model gets each result in its provider's own tool-result format, with the stored numbers."""

from __future__ import annotations

import json
import random
import re

import pytest

from bot.dm.events import Done, StateChanged, TextDelta
from bot.dm.service import DMService
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore
from tests.unit.conftest import make_config

HALL = Channel("g", "hall")


def tool_results(provider: str, body: dict) -> dict[str, str]:
    """call id -> the result text, read from the request body as the SDK sent it."""
    found = {}
    for message in body["messages"]:
        if provider == "anthropic" and message["role"] == "user" and isinstance(message["content"], list):
            for block in message["content"]:
                if block["type"] == "tool_result":
                    content = block["content"]
                    found[block["tool_use_id"]] = content if isinstance(content, str) else content[0]["text"]
        elif provider == "openai" and message["role"] == "tool":
            found[message["tool_call_id"]] = message["content"]
    return found


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_fight_through_the_sdk(tmp_path, server, build, provider):
    server.sse(f"{provider}_text.sse").sse(f"{provider}_rules_start.sse", chunk_size=61) \
        .sse(f"{provider}_rules_many.sse", chunk_size=89).sse(f"{provider}_rules_end.sse") \
        .sse(f"{provider}_after_roll.sse")
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    service = DMService(make_config(llm={"provider": provider}), store, build(provider))
    service.party.rng = random.Random(11)
    [e async for e in service.start(HALL, Player("u1", "Aria"), "marsh goblins")]
    await service.party.character(HALL, Player("u1", "Aria"), name="Thessaly", max_hp=12, ac=14, initiative_bonus=3)
    await service.party.character(HALL, Player("u2", "Bram"), name="Bram", max_hp=20, ac=16)
    events = [e async for e in service.act(HALL, Player("u1", "Aria"), "I draw my blades")]
    session = await store.active_session("hall")
    party = await service.party.load(session.id)
    stored_lines = [line for _, line in await store.state_changes(session.id)]
    await store.close()

    assert isinstance(events[-1], Done)
    changes = [e for e in events if isinstance(e, StateChanged)]
    assert [c.line for c in changes] == stored_lines
    kinds = [c.line.split()[0] for c in changes]
    assert kinds[0] == "⚔️" and "Combat begins" in changes[0].line and kinds[-1] == "🏁"
    # Narration, the change lines, more narration, in the order the model wrote them.
    order = [type(e).__name__ for e in events if isinstance(e, TextDelta | StateChanged)]
    assert order[0] == "TextDelta" and order[-1] == "TextDelta" and order.count("StateChanged") == len(changes)

    # The state after each round, as the engine told the model (in the provider's own format).
    bodies = [json.loads(r.content) for r in server.requests]
    assert len(bodies) == 5
    prefix = "toolu_01" if provider == "anthropic" else "call_"
    after_start = tool_results(provider, bodies[2])[f"{prefix}Start0"]
    assert "Combat: round 1" in after_start and "Goblin Archer (foe)" in after_start
    results = tool_results(provider, bodies[3])
    attack, update, next_turn = (results[f"{prefix}Many{i}"] for i in range(3))
    assert attack.startswith("⚔️ Goblin attacks Thessaly")
    assert "🩸 Goblin Archer takes 5 damage, is prone and is defeated — 0/5 HP" in update
    assert "➡️ Round" in next_turn
    assert "The combat is over after" in tool_results(provider, bodies[4])[f"{prefix}End0"]
    if provider == "openai":
        wire = bodies[3]["messages"]
        calls = next(m for m in reversed(wire) if m.get("tool_calls"))["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["attack", "update_character", "next_turn"]

    # Every number shown equals the engine's stored number.
    thessaly = party.character_of("u1")
    shown_hp = [int(n) for c in changes if "Thessaly takes" in c.line for n in re.findall(r"— (\d+)/12 HP", c.line)]
    assert shown_hp == ([thessaly.hp] if shown_hp else []) and (shown_hp or thessaly.hp == 12)
    initiative = dict(re.findall(r"([A-Z][\w ]*?) (\d+)(?:,| —)", changes[0].line.split("Initiative: ")[1]))
    first_state = changes[0].party.combat
    assert {c.name: str(c.initiative) for c in first_state.order} == initiative
    assert party.combat is None and thessaly.conditions == ()


async def test_the_cached_prefix_of_one_turn_is_the_start_of_the_next(tmp_path):
    """Anthropic caches the prefix up to its breakpoint: the breakpoint must sit before the [party] block (which
    changes every turn), or the next turn could never read it back."""
    from bot.llm.anthropic_provider import to_anthropic_messages
    from tests.fakes import ScriptedProvider

    store = SQLiteStore(str(tmp_path / "cache.db"))
    await store.open()
    provider = ScriptedProvider()
    service = DMService(make_config(), store, provider)
    [e async for e in service.start(HALL, Player("u1", "Aria"), "a heist")]
    await service.party.character(HALL, Player("u1", "Aria"), name="Thessaly", max_hp=12)
    for action in ("I case the vault", "I pick the lock", "I slip inside"):
        [e async for e in service.act(HALL, Player("u1", "Aria"), action)]
    await store.close()

    wires = [to_anthropic_messages(r.messages, volatile=r.volatile, cache=r.cache) for r in provider.requests[1:]]
    for before, after in zip(wires, wires[1:]):
        flat_before = [(i, j, b) for i, m in enumerate(before) for j, b in enumerate(m["content"])]
        cut = next(n for n, (_, _, b) in enumerate(flat_before) if "cache_control" in b)
        assert "[party]" not in flat_before[cut][2]["text"] and "[party]" in before[-1]["content"][-1]["text"]
        for i, j, block in flat_before[:cut + 1]:
            strip = {k: v for k, v in block.items() if k != "cache_control"}
            assert {k: v for k, v in after[i]["content"][j].items() if k != "cache_control"} == strip
