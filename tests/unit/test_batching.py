"""Several players at one table (issue 10): actions that arrive while the DM narrates are answered together, by
one LLM call, in arrival order; each player hears at once that their action is in; a failure reaches them all."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.dm.batching import MAX_BATCH
from bot.dm.events import AnswersBatch, Batched, Done, Failed
from bot.llm.base import Finish, TextChunk, Usage
from bot.store.base import Player
from tests.fakes import Gate, ScriptedProvider, bad_request, reply
from tests.unit.test_service import ARIA, HALL, open_session, run, text_of

PLAYERS = [Player(f"p{n}", name) for n, name in enumerate(["Bram", "Coda", "Dell", "Esme", "Fenn"])]


def held(text: str, gate: Gate) -> list:
    return [Usage(30), TextChunk(text[:5]), gate, TextChunk(text[5:]), Usage(30, 9), Finish("stop")]


class Listener:
    """One player's stream, recorded with the moment of each event."""

    def __init__(self, stream) -> None:
        self.events: list = []
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream) -> list:
        async for event in stream:
            self.events.append(event)
        return self.events


async def burst(service, actions: list[tuple[Player, str]]) -> list[Listener]:
    listeners = []
    for player, text in actions:
        listeners.append(Listener(service.act(HALL, player, text)))
        await asyncio.sleep(0.01)  # arrival order
    return listeners


async def test_a_burst_during_one_narration_is_answered_by_one_more_call(make_service, store):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), held("The troll roars at Aria.", gate),
                                reply("Bram and Coda flank it; Dell, Esme and Fenn hold the bridge."))
    service = make_service(provider)
    await open_session(service)
    running = Listener(service.act(HALL, ARIA, "I taunt the troll"))
    await asyncio.sleep(0.02)
    listeners = await burst(service, [(p, f"{p.name} acts {n}") for n, p in enumerate(PLAYERS)])
    for listener in listeners:  # each of them hears at once that the action is in
        assert listener.events and isinstance(listener.events[0], Batched), listener.events
    assert [l.events[0].position for l in listeners] == [1, 2, 3, 4, 5]
    gate.open()
    await running.task
    outcomes = [await l.task for l in listeners]
    assert provider.calls == 3  # the opening, the running answer, and one for all five
    assert isinstance(outcomes[0][1], AnswersBatch) and outcomes[0][1].ticket.players == PLAYERS
    assert text_of(outcomes[0]) == "Bram and Coda flank it; Dell, Esme and Fenn hold the bridge."
    assert all(isinstance(o[-1], Done) for o in outcomes)  # nobody is left waiting
    last = provider.requests[-1].messages[-1]
    assert last.role == "user"
    assert last.text.split("\n\n") == [f"{p.name}: {p.name} acts {n}" for n, p in enumerate(PLAYERS)]
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT role, status, author_name FROM turns ORDER BY seq").fetchall()
        calls = db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    assert rows[-6:] == [*[("player", "complete", p.name) for p in PLAYERS], ("dm", "complete", None)]
    assert calls == 3  # one call charged for the batch


async def test_with_batching_off_each_action_gets_its_own_call_in_order(make_service):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), held("First answer.", gate))
    service = make_service(provider, dm={"batch_actions": False}, limits={"max_queued_turns": 10})
    await open_session(service)
    running = Listener(service.act(HALL, ARIA, "I taunt the troll"))
    await asyncio.sleep(0.02)
    listeners = await burst(service, [(p, f"{p.name} acts") for p in PLAYERS[:3]])
    gate.open()
    await running.task
    for listener in listeners:
        await listener.task
        assert not any(isinstance(e, Batched) for e in listener.events)
    assert provider.calls == 5
    assert [r.messages[-1].text.rsplit("\n\n", 1)[-1] for r in provider.requests[2:]] == \
        [f"{p.name}: {p.name} acts" for p in PLAYERS[:3]]


async def test_a_failed_batched_turn_reaches_every_player_and_keeps_their_actions(make_service, store):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), held("The troll roars.", gate), [bad_request()])
    service = make_service(provider)
    await open_session(service)
    running = Listener(service.act(HALL, ARIA, "I taunt the troll"))
    await asyncio.sleep(0.02)
    listeners = await burst(service, [(p, f"{p.name} acts") for p in PLAYERS[:3]])
    gate.open()
    await running.task
    outcomes = [await l.task for l in listeners]
    assert all(isinstance(o[-1], Failed) and o[-1].kind == "rejected" for o in outcomes)
    with sqlite3.connect(store.path) as db:
        kept = db.execute("SELECT author_name, status FROM turns WHERE role = 'player' ORDER BY seq").fetchall()
    assert kept[-3:] == [(p.name, "failed") for p in PLAYERS[:3]]


async def test_a_batch_holds_at_most_eight_actions(make_service):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), held("The troll roars.", gate))
    service = make_service(provider)
    await open_session(service)
    running = Listener(service.act(HALL, ARIA, "I taunt the troll"))
    await asyncio.sleep(0.02)
    players = [Player(f"x{n}", f"X{n}") for n in range(MAX_BATCH + 1)]
    listeners = await burst(service, [(p, "I act") for p in players])
    [refused] = [l for l in listeners if l.events and isinstance(l.events[0], Failed)]
    assert refused is listeners[-1] and refused.events[0].kind == "busy"
    gate.open()
    await running.task
    for listener in listeners:
        await listener.task
    assert provider.calls == 3


async def test_an_action_during_the_batched_answer_goes_into_the_next_batch(make_service):
    gates = [Gate(), Gate()]
    provider = ScriptedProvider(reply("Opening."), held("First answer.", gates[0]), held("Batched answer.", gates[1]),
                                reply("Next answer."))
    service = make_service(provider)
    await open_session(service)
    running = Listener(service.act(HALL, ARIA, "I taunt the troll"))
    await asyncio.sleep(0.02)
    first = await burst(service, [(p, f"{p.name} acts") for p in PLAYERS[:2]])
    gates[0].open()
    await running.task
    await asyncio.sleep(0.05)  # the batched answer is streaming now
    late = await burst(service, [(PLAYERS[2], "Dell is late")])
    assert isinstance(late[0].events[0], Batched) and late[0].events[0].position == 1  # a new batch
    gates[1].open()
    for listener in first + late:
        await listener.task
    assert provider.calls == 4
    assert provider.requests[-1].messages[-1].text.endswith("Dell: Dell is late")
    assert "Dell" not in provider.requests[2].messages[-1].text
