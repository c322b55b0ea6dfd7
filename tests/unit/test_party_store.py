"""The party's state in the store, on both backends: one transaction per change, nothing written when the rules
refuse, no lost update between concurrent writers, and the document and its lines survive a reopen."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.store.base import Channel, Player

HALL = Channel("g", "hall")
ARIA = Player("u1", "Aria")


def bump(data: str | None) -> tuple[str, list[str], int]:
    count = json.loads(data)["n"] + 1 if data else 1
    return json.dumps({"n": count}), [f"change {count}"], count


async def test_changes_are_kept_with_their_lines_and_survive_a_reopen(opened):
    store = await opened()
    session = await store.start_session(HALL, ARIA, "")
    turn = await store.begin_turn(session.id, ARIA, "I attack")
    assert await store.party_state(session.id) is None
    assert await store.change_party_state(session.id, turn, bump) == 1
    assert await store.change_party_state(session.id, None, bump) == 2

    def refused(data: str | None):
        raise ValueError("the rules say no")

    with pytest.raises(ValueError):
        await store.change_party_state(session.id, turn, refused)
    await store.close()
    again = await opened()
    assert json.loads(await again.party_state(session.id)) == {"n": 2}
    assert await again.state_changes(session.id) == [(turn, "change 1"), (None, "change 2")]


async def test_concurrent_changes_lose_nothing(opened):
    first, second = await opened(), await opened()  # two connections: two processes on one database
    session = await first.start_session(HALL, ARIA, "")
    await asyncio.gather(*(store.change_party_state(session.id, None, bump) for store in [first, second] * 10))
    assert json.loads(await first.party_state(session.id)) == {"n": 20}
    assert len(await second.state_changes(session.id)) == 20
