"""Permissions and isolation, through the Discord stand-in with two guilds and several channels.

- One channel's session, history (what the model is sent), usage and budget are never visible from another
  channel, a thread of it, or another guild.
- /end needs the session's starter or Manage Channels (in that channel; Administrator implies it); /budget
  needs Manage Server, checked by the bot itself even when a server admin makes the command visible to all.
- The bot, holding exactly the permissions of its invite link and nothing from @everyone, plays a whole
  session, long answers and the fall-back to channel messages included; where it may not send messages (or
  not even see the channel) everything still works through interaction responses.
"""

from __future__ import annotations

import asyncio
import re

import discord
import pytest

from bot.client import INVITE_PERMISSIONS, INVITE_SCOPES
from bot.llm.base import Finish, LLMRequest, TextChunk, Usage
from tests.discord.conftest import (
    APP_ID,
    BOT_ID,
    GENERAL,
    GUILD,
    LOCKED,
    OTHER,
    PLAYER,
    THREAD,
    TOKEN,
)
from tests.discord.hostile import (
    check_outcome,
    install_log_recorder,
    remove_log_recorder,
)
from tests.fakes import Gate, ScriptedProvider, reply
from tests.standin import DEFAULT_BOT_PERMISSIONS, DiscordStandIn, Limits

ADMINISTRATOR, MANAGE_CHANNELS, MANAGE_GUILD = 1 << 3, 1 << 4, 1 << 5
VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY = 1 << 10, 1 << 11, 1 << 16
USE_APPLICATION_COMMANDS, SEND_MESSAGES_IN_THREADS = 1 << 31, 1 << 38
MEMBER = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | USE_APPLICATION_COMMANDS | SEND_MESSAGES_IN_THREADS

SIDE = 800_000_000_000_000_013  # a second text channel in the first guild
HIDDEN = 800_000_000_000_000_014  # the bot cannot even see it
GUILD_B = 800_000_000_000_000_101
B_HALL = 800_000_000_000_000_110
B_CRYPT = 800_000_000_000_000_111
MOD = 700_000_000_000_000_010  # Manage Channels in the first guild
SIDE_MOD = 700_000_000_000_000_011  # Manage Channels only in SIDE, by a channel overwrite
ADMIN = 700_000_000_000_000_012  # Administrator
SERVER_MANAGER = 700_000_000_000_000_013  # Manage Server but not Manage Channels
B_PLAYER = 700_000_000_000_000_020
OWNER = 700_000_000_000_000_099
PLAYERS_ROLE, MOD_ROLE, ADMIN_ROLE, MANAGER_ROLE = (600_000_000_000_000_001, 600_000_000_000_000_002,
                                                    600_000_000_000_000_003, 600_000_000_000_000_004)


@pytest.fixture(autouse=True)
def no_errors_logged():
    """Whatever a test does, nothing in the bot may log an error (a caught crash is still a crash)."""
    recorder = install_log_recorder()
    yield recorder
    remove_log_recorder(recorder)
    assert [p for p in recorder.problems() if p.startswith(("ERROR", "CRITICAL"))] == []


def guilds(bot_permissions: int = DEFAULT_BOT_PERMISSIONS) -> list[dict]:
    """Two guilds whose @everyone has no permissions at all, so the bot has exactly its role's."""
    roles = [{"id": PLAYERS_ROLE, "name": "players", "permissions": MEMBER},
             {"id": MOD_ROLE, "name": "mods", "permissions": MEMBER | MANAGE_CHANNELS},
             {"id": ADMIN_ROLE, "name": "admins", "permissions": ADMINISTRATOR},
             {"id": MANAGER_ROLE, "name": "managers", "permissions": MEMBER | MANAGE_GUILD}]
    first = {
        "id": GUILD, "name": "First Keep", "owner_id": OWNER, "everyone_permissions": 0,
        "bot_permissions": bot_permissions, "roles": roles,
        "channels": [
            {"id": GENERAL, "name": "general"},
            {"id": LOCKED, "name": "announcements", "position": 1,
             "overwrites": [{"id": BOT_ID, "type": "member", "deny": SEND_MESSAGES}]},
            {"id": THREAD, "name": "side-quest", "type": "thread", "parent_id": GENERAL},
            {"id": SIDE, "name": "side", "position": 2,
             "overwrites": [{"id": SIDE_MOD, "type": "member", "allow": MANAGE_CHANNELS}]},
            {"id": HIDDEN, "name": "hidden", "position": 3,
             "overwrites": [{"id": BOT_ID, "type": "member", "deny": VIEW_CHANNEL}]},
        ],
        "members": [{"id": PLAYER, "name": "aria", "roles": [PLAYERS_ROLE]},
                    {"id": OTHER, "name": "brom", "roles": [PLAYERS_ROLE]},
                    {"id": MOD, "name": "mod", "roles": [MOD_ROLE]},
                    {"id": SIDE_MOD, "name": "sidemod", "roles": [PLAYERS_ROLE]},
                    {"id": ADMIN, "name": "admin", "roles": [ADMIN_ROLE]},
                    {"id": SERVER_MANAGER, "name": "manager", "roles": [MANAGER_ROLE]}],
    }
    second = {
        "id": GUILD_B, "name": "Second Keep", "owner_id": OWNER, "everyone_permissions": 0,
        "bot_permissions": bot_permissions,
        "roles": [{"id": PLAYERS_ROLE + 100, "name": "players", "permissions": MEMBER}],
        "channels": [{"id": B_HALL, "name": "hall"}, {"id": B_CRYPT, "name": "crypt", "position": 1}],
        "members": [{"id": B_PLAYER, "name": "cyra", "roles": [PLAYERS_ROLE + 100]},
                    {"id": PLAYER, "name": "aria", "roles": [PLAYERS_ROLE + 100]}],  # in both guilds
    }
    return [first, second]


async def two_guilds(bot_permissions: int = DEFAULT_BOT_PERMISSIONS, **options) -> DiscordStandIn:
    options.setdefault("limits", Limits(interaction=(50, 1.0)))
    return await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                guilds=guilds(bot_permissions), **options).start()


# Each channel's adventure carries its own marker; the model's usage differs per channel, so every number
# /tokens and /session show can be traced to one channel.
CHANNELS = {GENERAL: (GUILD, "ALPHA", 1000), SIDE: (GUILD, "BRAVO", 2000), B_HALL: (GUILD_B, "CHARLIE", 3000),
            B_CRYPT: (GUILD_B, "DELTA", 4000)}
MARKERS = {marker for _, marker, _ in CHANNELS.values()}


def markers_in(text: str) -> set[str]:
    return {m for m in MARKERS if m in text}


def per_channel_usage(request: LLMRequest) -> list:
    [marker] = markers_in(request.messages[0].text)  # the opening request holds the premise
    tokens = next(t for _, m, t in CHANNELS.values() if m == marker)
    return reply(f"The {marker.lower()} story goes on.", input_tokens=tokens, output_tokens=tokens // 10)


async def test_sessions_history_usage_and_budget_stay_in_their_channel(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(default=per_channel_usage), standin=await two_guilds())
    for channel, (guild, marker, _) in CHANNELS.items():
        user = B_PLAYER if guild == GUILD_B else PLAYER
        check_outcome(h, await run_in(h, "start", {"premise": f"{marker} premise"}, channel, user))
    for round_no in range(2):
        for channel, (guild, marker, _) in CHANNELS.items():
            user = B_PLAYER if guild == GUILD_B else PLAYER
            check_outcome(h, await run_in(h, "act", {"action": f"{marker} act {round_no}"}, channel, user))
    # PLAYER is in both guilds: the same person, two separate adventures.
    check_outcome(h, await run_in(h, "act", {"action": "CHARLIE act by aria"}, B_HALL, PLAYER))
    budget = await run_in(h, "budget", {"tokens": 50_000}, GENERAL, SERVER_MANAGER)
    assert "budget is now 50,000 tokens" in check_outcome(h, budget, private_answer=True).private[0].content

    # The model only ever saw one channel's adventure at a time.
    assert h.provider.calls == 4 + 8 + 1
    for request in h.provider.requests:
        text = "\n".join(m.text for m in request.messages)
        assert len(markers_in(text)) == 1, f"one request mixed adventures: {markers_in(text)}"

    # /tokens and /session answer with this channel's numbers only.
    for channel, (guild, marker, tokens) in CHANNELS.items():
        user = B_PLAYER if guild == GUILD_B else PLAYER
        turns = 1 + 2 * 2 + (2 if channel == B_HALL else 0)  # opening; two acts and answers; aria's act there
        calls = 3 + (1 if channel == B_HALL else 0)
        used = calls * (tokens + tokens // 10)
        limit = 50_000 if channel == GENERAL else 100_000
        shown = check_outcome(h, await run_in(h, "tokens", {}, channel, user), private_answer=True).private[0]
        assert f"{used:,} used of {limit:,}" in shown.content, shown.content
        assert f"over {calls} model calls" in shown.content
        info = check_outcome(h, await run_in(h, "session", {}, channel, user), private_answer=True).private[0]
        assert f"Premise: {marker} premise" in info.content and markers_in(info.content) == {marker}
        assert f"Turns played: {turns}" in info.content
        assert f"{used:,} of {limit:,} tokens used" in info.content

    # A thread of a channel with an adventure is a channel of its own.
    in_thread = await run_in(h, "act", {"action": "ALPHA from the thread"}, THREAD, PLAYER)
    assert "no adventure running in this channel" in check_outcome(h, in_thread).refusal
    tokens = await run_in(h, "tokens", {}, THREAD, PLAYER)
    assert "no adventure" in check_outcome(h, tokens, private_answer=True).private[0].content

    # Ending one adventure ends only that one.
    check_outcome(h, await run_in(h, "end", {}, B_HALL, B_PLAYER))
    for channel in CHANNELS:
        assert (await h.bot.store.active_session(str(channel)) is None) == (channel == B_HALL)
    # Nothing of one channel was ever posted in another.
    for channel, (_, marker, _) in CHANNELS.items():
        for message in h.standin.messages(channel, include_deleted=True):
            assert markers_in(" ".join(r.content for r in message.history)) <= {marker}


async def run_in(h, name: str, options: dict, channel: int, user: int, timeout: float = 10.0):
    """Like ``h.run``, in whichever guild the channel belongs to."""
    guild = h.standin._state.world.channel_guild[channel]
    inter = await h.standin.invoke(name, options, guild_id=guild, channel_id=channel, user_id=user)
    event = h.finished.setdefault(inter.id, asyncio.Event())
    async with asyncio.timeout(timeout):
        await event.wait()
    return inter


@pytest.mark.parametrize("who, allowed", [
    (PLAYER, True),  # the starter
    (OTHER, False),  # another player
    (MOD, True),  # Manage Channels from a role
    (ADMIN, True),  # Administrator implies everything
    (SERVER_MANAGER, False),  # Manage Server is about the server, not this channel's game
])
async def test_end_needs_the_starter_or_manage_channels(make_dm_bot, who, allowed):
    h = await make_dm_bot(ScriptedProvider(), standin=await two_guilds())
    await h.run("start", user=PLAYER)
    inter = await h.run("end", user=who)  # permissions as Discord computes them from roles and overwrites
    outcome = check_outcome(h, inter)
    if allowed:
        assert "The adventure is over" in outcome.text
        assert await h.bot.store.active_session(str(GENERAL)) is None
    else:
        assert "Manage Channels" in outcome.refusal and "aria" in outcome.refusal.lower()
        assert await h.bot.store.active_session(str(GENERAL)) is not None


async def test_manage_channels_counts_only_in_the_channel_that_grants_it(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(), standin=await two_guilds())
    await h.run("start", user=PLAYER, channel=GENERAL)
    await h.run("start", user=PLAYER, channel=SIDE)
    refused = await h.run("end", user=SIDE_MOD, channel=GENERAL)
    assert "Manage Channels" in check_outcome(h, refused).refusal
    ended = await h.run("end", user=SIDE_MOD, channel=SIDE)
    assert "The adventure is over" in check_outcome(h, ended).text
    assert await h.bot.store.active_session(str(GENERAL)) is not None


async def test_budget_needs_manage_server_even_when_the_command_is_shown_to_everyone(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(), standin=await two_guilds())
    await h.run("start", user=PLAYER)
    await h.run("start", user=PLAYER, channel=SIDE)
    with pytest.raises(PermissionError):  # Discord hides /budget from members without Manage Server
        await h.run("budget", {"tokens": 5000}, user=MOD)
    # A server admin can show it to everyone (Server Settings → Integrations): the bot still checks.
    for commands in h.standin._state.commands._scopes.values():
        for command in commands:
            command["default_member_permissions"] = None
    for user in (PLAYER, MOD):
        refused = await h.run("budget", {"tokens": 100_000_000}, user=user)
        assert "Only members with the Manage Server permission" in check_outcome(h, refused).refusal
    assert (await h.bot.store.active_session(str(GENERAL))).token_limit is None
    for user in (SERVER_MANAGER, ADMIN):
        ok = await h.run("budget", {"tokens": 7000}, user=user)
        assert "budget is now 7,000 tokens" in check_outcome(h, ok, private_answer=True).private[0].content
    assert (await h.bot.store.active_session(str(GENERAL))).token_limit == 7000
    assert (await h.bot.store.active_session(str(SIDE))).token_limit is None  # the other channel's is its own


def test_the_invite_asks_for_exactly_what_the_bot_uses():
    assert INVITE_PERMISSIONS.value == DEFAULT_BOT_PERMISSIONS
    assert INVITE_PERMISSIONS == discord.Permissions(view_channel=True, send_messages=True,
                                                     send_messages_in_threads=True, create_public_threads=True,
                                                     embed_links=True, read_message_history=True)
    assert INVITE_SCOPES == ("bot", "applications.commands")
    url = discord.utils.oauth_url(APP_ID, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)
    assert f"permissions={DEFAULT_BOT_PERMISSIONS}" in url and "scope=bot+applications.commands" in url


LONG = " ".join(f"Sentence {i} of a very long answer, told slowly." for i in range(120))  # ~5,600 characters


EMBED_LINKS = 1 << 14


@pytest.mark.parametrize("bot_permissions", [
    INVITE_PERMISSIONS.value,
    # Less still: nothing the bot does today needs Read Message History or Embed Links (embeds only decide
    # whether links in narration show previews).
    INVITE_PERMISSIONS.value & ~(READ_MESSAGE_HISTORY | EMBED_LINKS),
], ids=["invite", "invite-without-history-and-embeds"])
async def test_a_whole_session_with_exactly_the_invite_permissions(make_dm_bot, bot_permissions):
    gate = Gate()
    provider = ScriptedProvider(
        reply(LONG),  # an opening that needs three messages
        reply("You search the room."),
        [Usage(50), TextChunk("The floor gives way and you fall "), gate, TextChunk("into the dark. " * 30),
         Usage(50, 90), Finish("stop")],
    )
    h = await make_dm_bot(provider, standin=await two_guilds(bot_permissions))
    bot_perms = h.standin._state.world.channel_permissions(GENERAL, BOT_ID)
    assert bot_perms == bot_permissions  # nothing from @everyone, nothing extra

    start = await h.run("start", {"premise": "a long tale"}, user=PLAYER)
    opening = check_outcome(h, start)
    assert len(opening.public) >= 3 and "".join(m.content for m in opening.public).replace(" ", "") == \
        LONG.replace(" ", "")
    check_outcome(h, await h.run("act", {"action": "I search"}, user=OTHER))
    check_outcome(h, await h.run("roll", {"dice": "1d20+2", "reason": "Perception"}, user=PLAYER))

    # The interaction token dies mid-answer: the rest comes as plain channel messages (Send Messages).
    act = asyncio.create_task(h.run("act", {"action": "I step forward"}, user=PLAYER))
    inter = await h.standin.wait_for(lambda: next((i for i in h.standin.interactions if i.name == "act"
                                                   and i.original and i.original.content.startswith("The floor")),
                                                  None))
    h.standin.expire_interaction(inter)
    gate.open()
    await act
    channel_posts = [m for m in h.standin.messages(GENERAL) if m.interaction_id is None and m.author_id == BOT_ID]
    assert channel_posts and "into the dark." in channel_posts[-1].content
    assert not [r for r in h.standin.requests if r.status == 403]

    expired = [r for r in h.standin.requests if 400 <= r.status < 500 and r.status != 429]
    assert [(r.method, r.status) for r in expired] == [("PATCH", 401)]  # how the bot learnt the token was dead
    after = len(h.standin.requests)
    check_outcome(h, await h.run("tokens", user=PLAYER), private_answer=True, since_request=after)
    check_outcome(h, await h.run("session", user=OTHER), private_answer=True, since_request=after)
    check_outcome(h, await h.run("end", user=PLAYER), since_request=after)
    assert not [m for m in h.standin.messages(GENERAL) if m.loading]


@pytest.mark.parametrize("channel", [LOCKED, HIDDEN])
async def test_a_channel_where_the_bot_may_not_post_still_plays_through_interactions(make_dm_bot, channel):
    h = await make_dm_bot(ScriptedProvider(reply(LONG)), standin=await two_guilds())
    perms = h.standin._state.world.channel_permissions(channel, BOT_ID)
    assert not perms & SEND_MESSAGES and (channel != HIDDEN or not perms & VIEW_CHANNEL)
    start = await h.run("start", {"premise": "behind closed doors"}, channel=channel)
    assert len(check_outcome(h, start).public) >= 3  # long: follow-ups are interaction webhooks too
    check_outcome(h, await h.run("act", {"action": "I knock"}, channel=channel))
    rolled = check_outcome(h, await h.run("roll", {"dice": "2d6"}, channel=channel, user=OTHER))
    assert re.search(r"→ \*\*\d+\*\*", rolled.text)
    check_outcome(h, await h.run("tokens", channel=channel), private_answer=True)
    refused = await h.run("end", channel=channel, user=OTHER)
    assert "Manage Channels" in check_outcome(h, refused).refusal
    check_outcome(h, await h.run("end", channel=channel))
    assert not [r for r in h.standin.requests if r.status == 403]
