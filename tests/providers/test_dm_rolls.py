"""The DM's own dice through both real SDKs: the model asks for a roll in the middle of its narration (SSE
``tool_use`` / ``tool_calls`` deltas), the engine rolls, the roll is shown, the result goes back to the model in
the provider's own tool-result format, and the narration goes on in the same turn."""

from __future__ import annotations

import json

import pytest

from bot.dm.events import Done, RollMade, TextDelta, UsageReport
from bot.dm.service import DMService
from bot.llm.base import Usage
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore
from tests.unit.conftest import make_config

HALL = Channel("g", "hall")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_dm_roll_round_trip(tmp_path, server, build, provider):
    server.sse(f"{provider}_dm_roll.sse", chunk_size=97).sse(f"{provider}_after_roll.sse")
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    service = DMService(make_config(llm={"provider": provider}), store, build(provider))
    events = [e async for e in service.start(HALL, Player("u1", "Aria"), "goblins")]
    await store.close()

    [roll] = [e for e in events if isinstance(e, RollMade)]
    assert roll.roll.expression == "1d20+4" and 5 <= roll.roll.total <= 24
    assert roll.for_whom == "The DM, for the goblin"
    order = [type(e).__name__ for e in events if not isinstance(e, UsageReport)]
    assert order.index("RollMade") > order.index("TextDelta")  # narration, then the roll, then more narration
    assert order[-1] == "Done" and isinstance(events[-1], Done)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "The goblin lunges at Aria with a rusty blade. The blade glances off Aria's shield. What do you do?"

    second = json.loads(server.requests[1].content)
    if provider == "anthropic":
        tool_use = second["messages"][-2]["content"][-1]
        result = second["messages"][-1]["content"][0]
        assert tool_use["type"] == "tool_use" and tool_use["input"]["notation"] == "1d20+4"
        assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_01GoblinAttack"
        content = result["content"] if isinstance(result["content"], str) else result["content"][0]["text"]
    else:
        call = second["messages"][-2]["tool_calls"][0]
        result = second["messages"][-1]
        assert call["function"]["name"] == "roll_dice" and json.loads(call["function"]["arguments"])["notation"] == "1d20+4"
        assert result["role"] == "tool" and result["tool_call_id"] == "call_GoblinAttack"
        content = result["content"]
    assert f"(total {roll.roll.total}" in content  # the engine's number, not one the model made up

    usage = [e.usage for e in events if isinstance(e, UsageReport)]
    assert len(usage) == 2 and sum((u for u in usage), Usage()).total > 0  # both rounds charged, as one turn
