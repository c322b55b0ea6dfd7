"""Two bot processes against one PostgreSQL, one Redis and the Discord stand-in (tests/e2e/shardrig.py).

Both processes run both shards, as during a rolling restart, and the stand-in hands a channel's commands to
each in turn, so every property below is tested where it is hardest:
  - the per-channel turn limit and a player's roll limit are windows shared through Redis, not one per process;
  - concurrent actions cannot overspend an adventure's budget;
  - a channel's turns run one at a time and in the order they were sent, each seeing the one before;
  - a process killed with kill -9 in the middle of a turn leaves no turn lock behind: the other process
    answers the channel at once, and the restarted one marks the cut turn interrupted.
One rig serves the module (starting two processes costs seconds); each test plays in its own channel. Skipped
with a message when PostgreSQL or Redis is not running, except in CI (CI=true), where they fail instead.
"""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_asyncio

from tests.e2e.faultkit import CURSOR, seen
from tests.e2e.shardrig import CHANNELS_A, GUILD, SHARDS, ShardRig
from tests.services import fresh_database, require

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

SHARD = (GUILD >> 22) % SHARDS
RPM = 4  # turns per channel per minute: /start and three actions
MAX_OUTPUT = 64
MANAGE_GUILD = 1 << 5
ANSWER = "The lamp swings and the shadows lean away from it, and the old door at the end of the hall stands ajar."


@pytest.fixture(scope="module")
def llm(llmock_server):
    from llmock.pytest_plugin import LLMock

    return LLMock(llmock_server).reset()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, llm):
    require("postgresql")
    require("redis")
    async with fresh_database("dmshard") as url:
        r = await ShardRig.create(tmp_path_factory.mktemp("shards"), llm, url, requests_per_minute=RPM,
                                  max_output_tokens=MAX_OUTPUT)
        try:
            # Both on the shard of CHANNELS_A's server, as two processes are during a rolling restart.
            await r.start_all(("a", [SHARD]), ("b", [SHARD]))
            yield r
            assert not r.tracebacks(), next(iter(r.tracebacks().values()))[-3000:]
        finally:
            await r.close()


@pytest.fixture(autouse=True)
def fresh_llm(llm):
    llm.reset().tool_mode("off")
    return llm


def both_received(rig: ShardRig, inters: list) -> bool:
    return len({rig.owner(i) for i in inters}) >= 2


async def test_the_rate_limit_is_one_window_across_processes(rig):
    channel = CHANNELS_A[0]
    rig.llmock.reply("Welcome.", times=None)
    opening = await rig.command("start", {"premise": "a quiet inn"}, channel)
    assert "Welcome." in opening
    inters = [await rig.invoke("act", {"action": f"I knock {i} times"}, channel) for i in range(1, 6)]
    shown = [await rig.finished(i) for i in inters]
    refused = [s for s in shown if any(f"limit of {RPM} DM turns a minute" in m.content for m in s)]
    assert both_received(rig, inters)
    # /start and three actions fit one minute's window; two more are refused, whichever process got them
    # (with one window per process, all five would have been answered).
    assert len(refused) == 2, [[m.content for m in s] for s in shown]
    assert all(s[0].ephemeral for s in refused)


async def test_a_players_roll_limit_is_one_window_across_processes(rig):
    channel = CHANNELS_A[4]
    inters = [await rig.invoke("roll", {"dice": "1d20", "reason": f"try {i}"}, channel) for i in range(1, 7)]
    shown = ["\n".join(m.content for m in await rig.finished(i)) for i in inters]
    assert both_received(rig, inters)
    refused = [s for s in shown if f"at most {RPM} rolls a minute" in s]
    assert len(refused) == 2 and sum("rolls `1d20`" in s for s in shown) == RPM, shown


async def test_concurrent_actions_cannot_overspend_a_budget(rig):
    channel = CHANNELS_A[1]
    rig.llmock.reply("Short answer.", times=None)
    await rig.command("start", {"premise": "a bridge"}, channel)
    session = await rig.session_id(channel)
    per_turn = await rig.used_tokens(session)  # about what one more turn costs
    budget = max(1000, int(per_turn * 2.5) + MAX_OUTPUT)
    said = await rig.command("budget", {"tokens": budget}, channel, member_permissions=MANAGE_GUILD | (1 << 31))
    assert f"budget is now {budget:,} tokens" in said, said
    inters = [await rig.invoke("act", {"action": f"I cross plank {i}"}, channel) for i in range(1, 4)]
    shown = ["\n".join(m.content for m in await rig.finished(i)) for i in inters]
    used = await rig.used_tokens(session)
    assert both_received(rig, inters)
    assert any("Short answer." in s for s in shown), shown
    assert any("budget" in s for s in shown), f"budget {budget}, used {used}: nothing was refused: {shown}"
    # At most one call's max_output_tokens past the budget, whatever the interleaving.
    assert used <= budget + MAX_OUTPUT, (used, budget)


async def test_a_channels_turns_stay_in_order_across_processes(rig):
    channel = CHANNELS_A[2]
    rig.llmock.reply("The story begins.")
    await rig.command("start", {"premise": "a ferry at dusk"}, channel)
    rig.llmock.pace(15)  # each answer streams for about half a second: later actions arrive meanwhile
    for i in range(1, 4):
        rig.llmock.reply(f"[answer {i}] {ANSWER}")
    first_call = len(rig.llmock.requests)
    inters = []
    for i in range(1, 4):
        inters.append(await rig.invoke("act", {"action": f"Step {i}: I row on"}, channel))
        await asyncio.sleep(0.1)
    shown = ["\n".join(m.content for m in await rig.finished(i, timeout=40)) for i in inters]
    assert both_received(rig, inters)
    for i, text in enumerate(shown, 1):
        assert text.startswith(f"[answer {i}]"), f"action {i} got {text[:40]!r}"
    turns = [t for t in await rig.turns(await rig.session_id(channel)) if t["status"] == "complete"]
    story = [(t["role"], t["content"][:10]) for t in turns]
    assert story == [("dm", "The story "), ("player", "Step 1: I "), ("dm", "[answer 1]"), ("player", "Step 2: I "),
                     ("dm", "[answer 2]"), ("player", "Step 3: I "), ("dm", "[answer 3]")], story
    calls = rig.llmock.requests[first_call:]
    assert len(calls) == 3
    for before, after in zip(calls, calls[1:]):
        assert after.started_at >= before.ended_at, "two turns of one channel called the model at once"
    # Each action's request carried the answer before it, whichever process had written it.
    for i, call in enumerate(calls[1:], 1):
        assert f"[answer {i}]" in str(call.body), f"action {i + 1} did not see answer {i}"


async def test_kill_9_mid_turn_leaves_no_lock_behind(rig):
    channel = CHANNELS_A[3]
    rig.llmock.reply("You wake in a cell.")
    await rig.command("start", {"premise": "a prison"}, channel)
    rig.llmock.pace(60)
    rig.llmock.reply(" ".join([ANSWER] * 3))  # streams for several seconds
    doomed = await rig.invoke("act", {"action": "I pick the lock"}, channel)
    await rig.standin.wait_for(lambda: any(m.content.endswith(CURSOR) for m in seen(rig.standin, doomed)), 15)
    assert await rig.turn_locks_held() == 1, "the answer is streaming: its turn lock is held"
    victim = rig.owner(doomed)  # the process running the turn
    await rig.kill(victim)
    async with asyncio.timeout(5):
        while await rig.turn_locks_held():
            await asyncio.sleep(0.05)  # PostgreSQL drops the lock when it sees the socket close
    rig.llmock.pace(0)
    rig.llmock.reply("The guard did not hear you.")
    survivor_answer = await rig.command("act", {"action": "I wait for the guard"}, channel, timeout=15)
    assert "The guard did not hear you." in survivor_answer
    await rig.start(victim, [SHARD])  # the restarted process marks the cut turn interrupted
    turns = await rig.turns(await rig.session_id(channel))
    cut = [t for t in turns if t["content"] == "I pick the lock"]
    assert [t["status"] for t in cut] == ["interrupted"], turns
    answered = [t for t in turns if t["content"] == "I wait for the guard"]
    assert [t["status"] for t in answered] == ["complete"]
    assert re.search(r"1 turns were cut by the last stop", rig.output(victim))

