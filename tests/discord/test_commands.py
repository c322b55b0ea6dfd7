"""Every slash command of the real bot, dispatched as real interactions from a local Discord stand-in, checked
as the players in the channel see it: what is public, what is private, that nothing stays on "thinking…",
that no model text pings anyone, and that every request the bot made is one Discord documents."""

from __future__ import annotations

import asyncio

import pytest

from bot.llm.base import Finish, TextChunk, Usage
from tests.discord.conftest import GENERAL, OTHER, PLAYER
from tests.fakes import Gate, ScriptedProvider, bad_request, reply

MANAGE_CHANNELS = 1 << 4
CURSOR = "▌"


def assert_clean(h) -> None:
    if h.standin.validation_skipped_reason:
        print(f"OpenAPI validation skipped: {h.standin.validation_skipped_reason}")
    assert h.standin.validation_errors == []
    assert h.standin.unknown_routes == []
    assert not [m for m in h.standin.messages(GENERAL) if m.loading], "a message is stuck on thinking…"


def public(h, inter):
    return [m for m in h.visible(inter) if not m.ephemeral and not m.deleted]


def private(h, inter):
    return [m for m in h.visible(inter) if m.ephemeral and not m.deleted]


async def test_commands_are_registered_once_and_again_only_when_changed(make_dm_bot, tmp_path):
    h = await make_dm_bot(ScriptedProvider())
    names = {c["name"] for c in h.standin.commands()}
    assert names == {"start", "end", "session", "act", "roll", "tokens", "budget", "config", "usage", "character",
                     "party", "combat", "recap", "remember", "forget"}
    for command in h.standin.commands():
        assert command["description"]
        for option in command.get("options", []):
            assert option["description"], f"/{command['name']} {option['name']} has no help text"
    assert h.standin.command_puts[None] == 1
    await h.bot.close()
    await h.task

    again = await make_dm_bot(ScriptedProvider(), standin=h.standin)  # same database: nothing changed
    assert h.standin.command_puts[None] == 1
    await again.bot.store.set_meta(f"commands:{again.bot.application_id}", "an older command set")
    await again.bot.register_commands()
    assert h.standin.command_puts[None] == 2


async def test_start_streams_the_opening_publicly(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply("Fog rolls over the harbour of Vell. What do you do?")))
    inter = await h.run("start", {"premise": "smugglers"})
    [message] = public(h, inter)
    assert message.content == "Fog rolls over the harbour of Vell. What do you do?"
    assert "smugglers" in h.provider.requests[0].messages[0].text
    assert_clean(h)


async def test_act_streams_with_visible_intermediate_states(make_dm_bot):
    gates = [Gate(), Gate()]
    provider = ScriptedProvider(reply("Opening."), [Usage(30), TextChunk("The door"), gates[0], TextChunk(" groans"),
                                                    gates[1], TextChunk(" open."), Usage(30, 6), Finish("stop")])
    h = await make_dm_bot(provider)
    await h.run("start")
    task = asyncio.create_task(h.run("act", {"action": "I push the door"}))
    for gate, text in zip(gates, ["The door", "The door groans"]):
        await h.standin.wait_for(lambda: any(m.content.startswith(text) for m in h.standin.messages(GENERAL)
                                             if m.interaction_id and m.content.endswith(CURSOR)))
        gate.open()
    inter = await task
    [message] = public(h, inter)
    assert message.content == "The door groans open."
    shown = [r.content for r in message.history if r.content]
    assert shown[0] == "The door" + " " + CURSOR and shown[-1] == "The door groans open."
    assert len(shown) >= 3
    assert_clean(h)


async def test_refusals_are_private_and_leave_nothing_public(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(), dm={"max_action_chars": 40})
    no_session = await h.run("act", {"action": "I look around"})
    assert public(h, no_session) == []
    assert "Start one with /start" in private(h, no_session)[0].content
    await h.run("start")
    again = await h.run("start", user=OTHER)
    assert public(h, again) == [] and "already running" in private(h, again)[0].content
    too_long = await h.run("act", {"action": "x" * 41})
    assert "41 characters; the limit is 40" in private(h, too_long)[0].content
    assert_clean(h)


async def test_rate_limit_refusal_says_when(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(), limits={"requests_per_minute": 1})
    await h.run("start")
    inter = await h.run("act", {"action": "again"})
    [message] = private(h, inter)
    assert "limit of 1 DM turns a minute" in message.content and "Try again in" in message.content
    assert h.provider.calls == 1
    assert_clean(h)


async def test_provider_failure_after_text_ends_the_message_visibly(make_dm_bot):
    provider = ScriptedProvider(reply("Opening."), [Usage(10), TextChunk("The dragon rears"), bad_request()])
    h = await make_dm_bot(provider)
    await h.run("start")
    inter = await h.run("act", {"action": "I charge"})
    [message] = public(h, inter)
    assert message.content.startswith("The dragon rears")
    assert "The DM was interrupted: The AI provider refused the request" in message.content
    assert CURSOR not in message.content
    assert_clean(h)


async def test_model_text_never_pings(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply(f"@everyone <@{OTHER}> <@&123> the bell tolls.")))
    inter = await h.run("start")
    [message] = public(h, inter)
    assert "@everyone" in message.content
    assert not message.pinged_everyone and message.pinged_users == () and message.pinged_roles == ()


async def test_roll_is_public_and_bad_notation_is_private(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider())
    inter = await h.run("roll", {"dice": "1d20+5", "reason": "Stealth", "advantage": "advantage"})
    [message] = public(h, inter)
    assert "rolls `2d20kh1+5` with advantage for *Stealth*" in message.content and "→ **" in message.content
    bad = await h.run("roll", {"dice": "1d20+"})
    assert public(h, bad) == [] and private(h, bad)[0].content
    assert_clean(h)


async def test_tokens_and_session_are_private(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(reply("Opening.", input_tokens=1200, output_tokens=300)),
                          limits={"tokens_per_session": 50_000})
    empty = await h.run("tokens")
    assert "no adventure" in private(h, empty)[0].content
    await h.run("start", {"premise": "a *haunted* mill"})
    tokens = await h.run("tokens")
    [message] = private(h, tokens)
    assert "1,500 used of 50,000" in message.content and "48,500 left" in message.content
    assert "Estimated cost: about $" in message.content
    session = await h.run("session")
    [message] = private(h, session)
    assert "Turns played: 1" in message.content and r"a \*haunted\* mill" in message.content
    assert_clean(h)


async def test_end_needs_the_starter_or_manage_channels(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider())
    await h.run("start", user=PLAYER)
    refused = await h.run("end", user=OTHER, permissions=0)
    assert public(h, refused) == [] and "Manage Channels" in private(h, refused)[0].content
    ended = await h.run("end", user=OTHER, permissions=MANAGE_CHANNELS)
    assert "The adventure is over" in public(h, ended)[0].content
    assert_clean(h)


@pytest.mark.parametrize("premise", ["", "a quiet village"])
async def test_start_options_are_optional(make_dm_bot, premise):
    h = await make_dm_bot(ScriptedProvider())
    inter = await h.run("start", {"premise": premise} if premise else {})
    assert public(h, inter)[0].content == "The DM answers."


async def test_budget_needs_manage_server_and_applies_at_once(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(default=lambda r: reply("ok", input_tokens=3000, output_tokens=100)))
    manage_guild = 1 << 5
    [budget] = [c for c in h.standin.commands() if c["name"] == "budget"]
    assert budget["default_member_permissions"] == str(manage_guild)  # Discord hides it from other members
    await h.run("start")
    with pytest.raises(PermissionError):
        await h.run("budget", {"tokens": 5000}, user=OTHER, permissions=0)
    # (an admin can re-enable it for everyone in the server settings: the service checks the permission too,
    # see tests/unit/test_service.py)
    ok = await h.run("budget", {"tokens": 4000}, user=OTHER, permissions=manage_guild)
    assert "budget is now 4,000 tokens (3,100 used, 900 left)" in private(h, ok)[0].content
    act = await h.run("act", {"action": "onwards"})
    assert "used 3,100 of its 4,000 tokens" in private(h, act)[0].content
    assert_clean(h)


async def test_a_retry_is_explained_while_the_players_wait(make_dm_bot):
    from tests.fakes import overloaded

    h = await make_dm_bot(ScriptedProvider([overloaded()], reply("The storm passes.")),
                          retry={"initial_backoff_seconds": 0.3, "max_backoff_seconds": 0.3})
    inter = await h.run("start")
    [message] = public(h, inter)
    assert message.content == "The storm passes."
    notes = [r.content for r in message.history if "-# ⏳" in r.content]
    assert notes and notes[0].endswith("-# ⏳ Anthropic is overloaded (529); trying again (2/3)… ▌")
    assert_clean(h)
