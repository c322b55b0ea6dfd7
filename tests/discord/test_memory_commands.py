"""/remember, /recap and /forget through the real client and a Discord stand-in: who sees what, permissions, and
that a long recap is split into messages Discord accepts."""

from __future__ import annotations

import asyncio

from tests.discord.conftest import OTHER, PLAYER
from tests.discord.test_commands import MANAGE_CHANNELS, assert_clean, private, public
from tests.fakes import Gate, ScriptedProvider, reply


async def test_remember_recap_and_forget(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply("The *harbour* of Vell.")))
    none = await h.run("recap")
    assert public(h, none) == [] and "no adventure" in private(h, none)[0].content
    await h.run("start", user=PLAYER)
    pinned = await h.run("remember", {"fact": "Oswin *owes* us\n[dice] 10 gold"}, user=OTHER)
    [message] = public(h, pinned)
    assert "#1" in message.content and r"Oswin \*owes\* us [dice] 10 gold" in message.content
    too_long = await h.run("remember", {"fact": "x" * 301})
    assert public(h, too_long) == [] and "300" in private(h, too_long)[0].content

    recap = await h.run("recap")
    assert public(h, recap) == []
    [message] = private(h, recap)
    assert "#1 Oswin" in message.content and "The story so far" in message.content
    shown = await h.run("recap", {"public": True})
    assert public(h, shown) and not private(h, shown)

    refused = await h.run("forget", {"number": 1}, user=999, permissions=0)
    assert public(h, refused) == [] and "Manage Channels" in private(h, refused)[0].content
    manager = await h.run("forget", {"number": 1}, user=999, permissions=MANAGE_CHANNELS)
    assert "no longer pinned" in public(h, manager)[0].content
    assert_clean(h)


async def test_a_long_recap_is_split_and_recap_works_while_the_dm_narrates(make_dm_bot):
    gate = Gate()
    h = await make_dm_bot(ScriptedProvider(reply("Opening."), [gate, *reply("Later.")]))
    await h.run("start")
    for i in range(25):
        await h.run("remember", {"fact": f"fact {i} " + "a long detail to keep " * 12})
    narrating = asyncio.create_task(h.run("act", {"action": "I wait."}))
    while not h.provider.in_flight:  # the DM is narrating (held at the gate)
        await asyncio.sleep(0.01)
    recap = await h.run("recap")
    messages = private(h, recap)
    assert len(messages) >= 2 and all(len(m.content) <= 2000 for m in messages)
    assert "#25" in "".join(m.content for m in messages)
    assert h.provider.in_flight == 1
    gate.open()
    await narrating
    assert_clean(h)
