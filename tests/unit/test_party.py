"""The rules engine behind the DM service: the model's state tools carried out, shown, stored and answered; the
party's state last in every request; a restart in the middle of a combat; two channels apart."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bot.dm.events import Done, StateChanged
from bot.dm.rules.text import RuleError
from bot.dm.service import DMService
from bot.llm.base import Finish, TextChunk, ToolCall, Usage
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore
from tests.fakes import ScriptedProvider, reply
from tests.unit.conftest import make_config

HALL, CRYPT = Channel("g", "hall"), Channel("g", "crypt")
ARIA, BRAM = Player("u1", "Aria"), Player("u2", "Bram")
GOBLINS = [{"name": "Goblin", "hp": 7, "ac": 13, "initiative_bonus": 2},
           {"name": "Goblin 2", "hp": 7, "ac": 13, "initiative_bonus": 2}]


def calls(text: str, *tools: tuple[str, dict]) -> list:
    return [Usage(50), TextChunk(text), *[ToolCall(f"c{i}-{name}", name, args) for i, (name, args) in
                                          enumerate(tools)], Usage(50, 10), Finish("tool_calls")]


async def collect(events) -> list:
    return [e async for e in events]


async def started(service: DMService, channel: Channel = HALL) -> None:
    await collect(service.start(channel, ARIA, "goblins"))
    await service.party.character(channel, ARIA, name="Thessaly", role="rogue", max_hp=12, ac=14, initiative_bonus=3)
    await service.party.character(channel, BRAM, name="Bram", max_hp=20, ac=16)


def seeded(service: DMService, seed: int = 1) -> DMService:
    service.party.rng = random.Random(seed)
    return service


async def test_every_tool_in_one_turn_and_the_state_after_each(make_service, store):
    provider = ScriptedProvider(
        reply("A goblin ambush!"),
        calls("Goblins leap out! ", ("start_combat", {"combatants": GOBLINS})),
        calls("The first goblin strikes. ",
              ("attack", {"attacker": "Goblin", "target": "Thessaly", "attack_bonus": 4, "damage": "1d6+2",
                          "advantage": None}),
              ("update_character", {"name": "Thessaly", "add_conditions": ["poisoned"], "reason": "venom"}),
              ("next_turn", {})),
        calls("They flee. ", ("end_combat", {})),
        reply("Silence returns."),
    )
    service = seeded(make_service(provider))
    await collect(service.start(HALL, ARIA, "goblins"))
    await service.party.character(HALL, ARIA, name="Thessaly", max_hp=12, ac=14, initiative_bonus=3)
    events = await collect(service.act(HALL, ARIA, "I draw my blades"))
    assert isinstance(events[-1], Done)
    changes = [e for e in events if isinstance(e, StateChanged)]
    assert changes[0].line.startswith("⚔️ Combat begins! Initiative: ")
    assert [c.party.combat is not None for c in changes] == [True] * (len(changes) - 1) + [False]
    assert changes[-1].line == "🏁 The combat is over after 1 round"

    # What each tool answered is what the next request carries, in order, with the state after it.
    results = {r.call_id: r for request in provider.requests for m in request.messages for r in m.tool_results}
    assert not any(r.is_error for r in results.values())
    assert "Combat: round 1" in results["c0-start_combat"].content
    assert "conditions: poisoned" in results["c1-update_character"].content
    assert "Rules: poisoned:" in results["c1-update_character"].content
    party = await service.party.load((await store.active_session("hall")).id)
    thessaly = party.characters[0]
    assert thessaly.conditions == ("poisoned",) and party.combat is None
    attack = [c for c in changes if c.line.startswith("🩸")]
    if attack:  # a hit: the line's HP is the stored HP
        assert f"{thessaly.hp}/12 HP" in attack[0].line
    else:
        assert thessaly.hp == 12

    # Every line shown is stored with the player's turn.
    session = await store.active_session("hall")
    stored = await store.state_changes(session.id)
    turns = await store.all_turns(session.id)
    action = next(t for t in turns if t.role == "player")
    assert [line for _, line in stored] == [c.line for c in changes]
    assert {turn_id for turn_id, _ in stored} == {action.id}


async def test_the_party_block_comes_last_and_the_stable_part_stays_the_same(make_service):
    provider = ScriptedProvider()
    service = make_service(provider)
    await started(service)
    await collect(service.act(HALL, ARIA, "I look around"))
    await collect(service.act(HALL, BRAM, "I listen"))
    first, second = provider.requests[-2], provider.requests[-1]
    block = first.volatile  # after the stable part of the request: what changes every turn
    assert block.startswith("[party]") and block.endswith("[/party]")
    assert '"Thessaly" (played by "Aria", role "rogue"): 12/12 HP, AC 14, initiative +3' in block
    assert "Since the last turn: Aria made a new character: Thessaly." in block  # the DM is told of a sheet change
    assert "Since the last turn" not in second.volatile  # once
    assert first.messages[-1].text.endswith("Aria: I look around")
    # The history before the block is the same prefix in the next request: prompt caching keeps working.
    assert second.messages[:len(first.messages)] == first.messages
    assert "[party]" in service.system and "update_character" in service.system
    assert {t.name for t in first.tools} == {t.name for t in service.tools}  # with a party, the state tools too
    assert {t.name for t in service.tools} == {"roll_dice", "update_character", "start_combat", "attack",
                                               "next_turn", "end_combat"}


async def test_no_block_and_story_only_play_without_characters(make_service):
    provider = ScriptedProvider()
    service = make_service(provider)
    await collect(service.start(HALL, ARIA, ""))
    await collect(service.act(HALL, ARIA, "I wander"))
    assert not any("[party]" in m.text for m in provider.requests[-1].messages) and not provider.requests[-1].volatile
    assert [t.name for t in provider.requests[-1].tools] == ["roll_dice"]  # as before the rules engine


@pytest.mark.parametrize("name,args,reason", [
    ("attack", {"attacker": "Ghost", "target": "Thessaly", "attack_bonus": 1, "damage": "1d4"}, "no one named"),
    ("attack", {"attacker": "Bram", "target": "Thessaly", "attack_bonus": 1, "damage": "3x"}, "Bad damage"),
    ("next_turn", {}, "No combat is running"),
    ("update_character", {"name": "Thessaly", "hp_change": 2.5}, "whole number"),
])
async def test_bad_arguments_come_back_as_errors_and_change_nothing(make_service, store, name, args, reason):
    provider = ScriptedProvider(reply("Opening."), calls("Hm. ", (name, args)), reply("Let me rethink."))
    service = make_service(provider)
    await started(service)
    session = await store.active_session("hall")
    before = dataclasses.replace(await service.party.load(session.id), notes=())  # told to the DM this turn
    events = await collect(service.act(HALL, ARIA, "I wait"))
    assert isinstance(events[-1], Done) and not [e for e in events if isinstance(e, StateChanged)]
    [result] = provider.requests[-1].messages[-1].tool_results
    assert result.is_error and result.content.startswith("Not done:") and reason in result.content
    assert await service.party.load(session.id) == before and await store.state_changes(session.id) == []


async def test_a_malformed_call_is_refused(make_service):
    provider = ScriptedProvider(reply("Opening."),
                                [Usage(5), ToolCall("x", "attack", {}, malformed=True), Finish("tool_calls")],
                                reply("Sorry."))
    service = make_service(provider)
    await started(service)
    await collect(service.act(HALL, ARIA, "I wait"))
    [result] = provider.requests[-1].messages[-1].tool_results
    assert result.is_error and "JSON object" in result.content


async def test_a_restart_in_the_middle_of_a_combat_keeps_everything(tmp_path):
    path = str(tmp_path / "restart.db")
    config = make_config()
    store = SQLiteStore(path)
    await store.open()
    provider = ScriptedProvider(reply("Opening."), calls("Fight! ", ("start_combat", {"combatants": GOBLINS}),
                                                        ("update_character", {"name": "Goblin 2", "hp_change": -3,
                                                                              "add_conditions": ["prone"]}),
                                                        ("next_turn", {}), ("next_turn", {})), reply("Go on."))
    service = seeded(DMService(config, store, provider))
    await started(service)
    await collect(service.act(HALL, ARIA, "I charge"))
    before = await service.party.view(HALL)
    tracker = await service.party.combat_text(HALL)
    await store.close()

    again = SQLiteStore(path)
    await again.open()
    later = ScriptedProvider(calls("Next! ", ("next_turn", {})), reply("..."))
    revived = DMService(config, again, later)
    after = await revived.party.view(HALL)
    assert after == before and await revived.party.combat_text(HALL) == tracker
    assert after.combat.round == 1 and after.combat.turn == 2
    goblin2 = next(c for c in after.combat.order if c.name == "Goblin 2")
    assert (goblin2.hp, goblin2.conditions) == (4, ("prone",))
    await collect(revived.act(HALL, BRAM, "I hold"))  # the combat goes on where it was
    now = await revived.party.view(HALL)
    assert (now.combat.round, now.combat.turn) == ((1, 3) if len(now.combat.order) > 3 else (2, 0))
    assert "Combat: round 1" in later.requests[0].volatile  # the DM is shown the combat after a restart
    await again.close()


async def test_two_channels_never_mix(make_service, store):
    provider = ScriptedProvider(default=lambda request: reply("The DM answers."))
    service = make_service(provider)
    await started(service, HALL)
    await collect(service.start(CRYPT, BRAM, "undead"))
    await service.party.character(CRYPT, BRAM, name="Morwen", max_hp=9, ac=12)
    provider.script = [calls("Skeletons! ", ("start_combat", {"combatants": [{"name": "Skeleton", "hp": 13, "ac": 13,
                                                                             "initiative_bonus": 2}]})),
                       reply("Bones rattle.")]
    await collect(service.act(CRYPT, BRAM, "I raise my torch"))
    hall, crypt = await service.party.view(HALL), await service.party.view(CRYPT)
    assert [c.name for c in hall.characters] == ["Thessaly", "Bram"] and hall.combat is None
    assert [c.name for c in crypt.characters] == ["Morwen"] and {c.name for c in crypt.combat.order} == {
        "Morwen", "Skeleton"}
    # The crypt's names mean nothing in the hall: the model gets an error there.
    provider.script = [calls("", ("attack", {"attacker": "Skeleton", "target": "Thessaly", "attack_bonus": 4,
                                            "damage": "1d6"})), reply("...")]
    await collect(service.act(HALL, ARIA, "I rest"))
    assert provider.requests[-1].messages[-1].tool_results[0].is_error
    assert "Morwen" not in "".join(m.text for m in provider.requests[-1].messages)
    # Bram has a character in each adventure, each its own.
    assert crypt.character_of("u2").name == "Morwen" and hall.character_of("u2").name == "Bram"


async def test_character_needs_an_adventure_and_a_free_name(make_service):
    service = make_service(ScriptedProvider())
    with pytest.raises(RuleError, match="no adventure"):
        await service.party.character(HALL, ARIA, name="Thessaly")
    await started(service)
    with pytest.raises(RuleError, match="already called thessaly"):
        await service.party.character(HALL, BRAM, name="thessaly")
    with pytest.raises(RuleError, match="name"):
        await service.party.character(HALL, BRAM, name="[]**")
    made = await service.party.character(HALL, ARIA, name="Thessaly", description="now with a cloak")
    assert (made.hp, made.role, made.description) == (12, "rogue", "now with a cloak")
