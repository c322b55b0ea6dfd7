"""Issue 9 on the Discord side, through the real bot and a local Discord stand-in: a stop during the last paced
edits leaves no cursor (item 3), commands during a shutdown get a short private note (item 14), and /roll's
per-player limit answers privately (item 15)."""

from __future__ import annotations

import asyncio

from bot.llm.base import Finish, TextChunk, Usage
from tests.discord.conftest import GENERAL
from tests.discord.test_commands import CURSOR, assert_clean, private, public
from tests.fakes import Gate, ScriptedProvider, reply


async def started(h, inter, text: str) -> None:
    await h.standin.wait_for(lambda: any(m.content.startswith(text) for m in h.standin.messages(GENERAL)
                                         if m.interaction_id == inter.id))


async def test_a_stop_during_the_last_paced_edits_ends_with_the_whole_answer(make_dm_bot):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [Usage(20), TextChunk("The bell"), gate,
                                                    TextChunk(" tolls thrice."), Usage(20, 5), Finish("stop")])
    h = await make_dm_bot(provider, discord={"edit_interval_seconds": 3.0})
    await h.run("start")
    act = asyncio.create_task(h.standin.invoke("act", {"action": "I listen"}, channel_id=GENERAL))
    inter = await act
    await started(h, inter, "The bell")  # shown with the cursor; the next edit is paced 3 s later
    gate.open()
    await asyncio.sleep(0.2)  # the answer is complete and stored; its last edit waits for the pace
    await h.bot.stop_turns()  # SIGTERM / SIGINT
    [message] = public(h, inter)
    assert message.content == "The bell tolls thrice."
    assert CURSOR not in message.content


async def test_a_stop_mid_answer_ends_with_the_restart_note(make_dm_bot):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [Usage(20), TextChunk("The bell"), gate, TextChunk(" never.")])
    h = await make_dm_bot(provider, discord={"edit_interval_seconds": 3.0})
    await h.run("start")
    inter = await h.standin.invoke("act", {"action": "I listen"}, channel_id=GENERAL)
    await started(h, inter, "The bell")
    await h.bot.stop_turns()
    [message] = public(h, inter)
    assert message.content.startswith("The bell") and "restarting" in message.content
    assert CURSOR not in message.content


async def test_commands_during_a_shutdown_get_a_short_private_note(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply("Opening.")))
    await h.run("start")
    h.bot.stopping = True  # what close() sets first
    for name, options in (("act", {"action": "I wait"}), ("roll", {"dice": "1d20"}), ("tokens", {})):
        inter = await h.standin.invoke(name, options, channel_id=GENERAL)  # the tree's check answers it
        await h.standin.wait_for(lambda: private(h, inter))
        assert [m.content for m in private(h, inter)] == ["The bot is restarting. Try again in a minute."]
        assert public(h, inter) == []
    h.bot.stopping = False
    assert_clean(h)


async def test_a_command_whose_store_closed_under_it_says_restarting(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply("Opening.")))
    await h.run("start")
    await h.bot.store.close()  # the shutdown reached the store while /tokens was on its way
    h.bot.stopping = True
    h.bot.tree.interaction_check = _allow  # the command got past the door before the stop began
    inter = await h.run("tokens")
    assert [m.content for m in private(h, inter)] == ["The bot is restarting. Try again in a minute."]
    await h.bot.store.open()


async def _allow(interaction) -> bool:
    return True


async def test_rolling_too_fast_is_refused_privately_with_when_to_roll_again(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(), limits={"rolls_per_minute": 2})
    for _ in range(2):
        inter = await h.run("roll", {"dice": "1d20"})
        assert public(h, inter)
    inter = await h.run("roll", {"dice": "1d20"})
    assert public(h, inter) == []
    [note] = private(h, inter)
    assert "at most 2 rolls a minute" in note.content and "Roll again in" in note.content
    assert_clean(h)
