"""A table of several players (issue 10) through the real bot and the local Discord stand-in: a burst of actions
during a narration is acknowledged at once and answered by one more call, every response pointing to the answer;
/start thread:true opens a public thread and plays the adventure there."""

from __future__ import annotations

import asyncio
import time

from bot.llm.base import Finish, TextChunk, Usage
from tests.discord.conftest import GENERAL, GUILD, PLAYER
from tests.discord.test_commands import CURSOR, assert_clean, private, public
from tests.fakes import Gate, ScriptedProvider, bad_request, reply

PLAYERS = [PLAYER + 100 + n for n in range(5)]


async def burst_during_a_narration(h, gate: Gate):
    running = await h.standin.invoke("act", {"action": "I taunt the troll"}, channel_id=GENERAL)
    await h.standin.wait_for(lambda: any(m.content.startswith("The troll") for m in public(h, running)))
    sent = time.monotonic()
    burst = [await h.standin.invoke("act", {"action": f"Player {n} acts"}, channel_id=GENERAL, user_id=user)
             for n, user in enumerate(PLAYERS)]
    # every player sees that the action is in while the running answer is still held back
    await h.standin.wait_for(lambda: all(any("📝" in m.content for m in h.visible(i)) for i in burst[1:])
                             and any("Your action is in" in m.content for m in h.visible(burst[0])))
    print(f"\nall five acknowledged {time.monotonic() - sent:.3f} s after the first action of the burst")
    gate.open()
    return running, burst


async def test_a_burst_of_five_players_costs_two_calls_and_everyone_is_answered(make_dm_bot):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [Usage(30), TextChunk("The troll"), gate, TextChunk(" roars."),
                                                    Usage(30, 4), Finish("stop")],
                                reply("The five of you surround the troll."))
    h = await make_dm_bot(provider)
    await h.run("start")
    before = provider.calls
    running, burst = await burst_during_a_narration(h, gate)
    leader = burst[0]
    await h.standin.wait_for(lambda: all(m.content and CURSOR not in m.content
                                         for i in burst for m in public(h, i)) and public(h, leader)
                             and public(h, leader)[0].content == "The five of you surround the troll.")
    await h.standin.wait_for(lambda: all("answers it together" in public(h, i)[0].content for i in burst[1:]))
    assert provider.calls - before == 2  # the running answer and one for the whole batch
    [answer] = public(h, leader)
    link = f"/channels/{GUILD}/{GENERAL}/{answer.id}"
    for n, inter in enumerate(burst[1:], start=1):
        [ack] = public(h, inter)
        assert ack.content.startswith(f"📝 Player {n} acts") and link in ack.content, ack.content
    text = provider.requests[-1].messages[-1].text
    assert [line.split(": ", 1)[1] for line in text.split("\n\n")] == [f"Player {n} acts" for n in range(5)]
    assert_clean(h)


async def test_a_failed_batched_turn_reaches_every_player(make_dm_bot):
    gate = Gate()
    provider = ScriptedProvider(reply("Opening."), [Usage(30), TextChunk("The troll"), gate, TextChunk(" roars."),
                                                    Usage(30, 4), Finish("stop")], [bad_request()])
    h = await make_dm_bot(provider)
    await h.run("start")
    _, burst = await burst_during_a_narration(h, gate)
    await h.standin.wait_for(lambda: all("refused the request" in " ".join(m.content for m in h.visible(i))
                                         for i in burst))
    await h.standin.wait_for(lambda: not [m for m in h.standin.messages(GENERAL) if m.loading])
    assert_clean(h)


async def test_start_in_a_thread_streams_the_opening_there(make_dm_bot):
    provider = ScriptedProvider(reply("Mist curls over the canals of Vell."), reply("The gondolier nods."))
    h = await make_dm_bot(provider)
    inter = await h.run("start", {"premise": "a heist in a\nfloating city", "thread": True})
    [thread_id] = h.standin._state.threads_created
    thread = h.standin._state.world.channels[thread_id]
    assert (thread.name, thread.parent_id, thread.type_value) == ("a heist in a floating city", GENERAL, 11)
    [pointer] = public(h, inter)
    assert f"<#{thread_id}>" in pointer.content
    await h.standin.wait_for(lambda: any(m.content == "Mist curls over the canals of Vell."
                                         for m in h.standin.messages(thread_id)))
    act = await h.run("act", {"action": "I hail a gondola"}, channel=thread_id)
    assert [m.content for m in public(h, act)] == ["The gondolier nods."]
    again = await h.run("act", {"action": "I wait"}, channel=GENERAL)  # the parent channel has no adventure
    assert "no adventure" in private(h, again)[0].content
    assert_clean(h)


async def test_start_thread_without_the_permission_says_what_is_missing(make_dm_bot):
    from tests.standin.model import CREATE_PUBLIC_THREADS, Overwrite

    provider = ScriptedProvider(reply("Never."))
    h = await make_dm_bot(provider)
    world = h.standin._state.world
    guild_id = world.channel_guild[GENERAL]
    world.channels[GENERAL].overwrites.append(Overwrite(guild_id, "role", deny=CREATE_PUBLIC_THREADS))
    inter = await h.run("start", {"thread": True})
    assert "Create Public Threads" in private(h, inter)[0].content
    assert public(h, inter) == [] and provider.calls == 0
    assert_clean(h)


async def test_start_inside_an_existing_thread_plays_there(make_dm_bot):
    from tests.discord.conftest import THREAD

    provider = ScriptedProvider(reply("The side quest begins."), reply("You find the map."))
    h = await make_dm_bot(provider)
    for options in ({"thread": True}, {}):  # with or without the option: that thread is where it runs
        inter = await h.run("start", options, channel=THREAD)
        if options:
            assert [m.content for m in public(h, inter)] == ["The side quest begins."]
            assert h.standin._state.threads_created == []  # no thread of a thread
        else:
            assert "already running" in private(h, inter)[0].content
    act = await h.run("act", {"action": "I search"}, channel=THREAD)
    assert [m.content for m in public(h, act)] == ["You find the map."]
    assert_clean(h)
