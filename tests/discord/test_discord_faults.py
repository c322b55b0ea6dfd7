"""Discord faults while the DM's answer streams: 429s on edits, a 500 on a follow-up, an interaction token that
dies, a channel the bot may not post in, a gateway reconnect. The real DungeonMasterBot against the Discord
stand-in; checked as the players see the channel: the whole answer, once, in order, nothing stuck.

docs/faults.md has the table of these cases.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator

import pytest

import bot.discord_sink
from bot.llm.base import Finish, LLMRequest, StreamItem, TextChunk, Usage
from tests.discord.conftest import (
    APP_ID,
    BOT_ID,
    GENERAL,
    LOCKED,
    PLAYER,
    TOKEN,
    guild_spec,
)
from tests.fakes import Gate, ScriptedProvider, reply
from tests.standin import DiscordStandIn, Limits

CURSOR = "▌"
SCENE = ("The bridge sways as you cross; below, the river churns white around black rocks, and somewhere "
         "upstream a horn sounds three times.")
WORDS = SCENE.split()


def narration(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words)).strip()


class PacedProvider(ScriptedProvider):
    """Answers every call with ``text`` in word chunks, ``pause`` seconds apart (a model writing)."""

    def __init__(self, text: str, *, pause: float = 0.01, opening: str | None = "The adventure begins.") -> None:
        super().__init__(*([reply(opening)] if opening else []))
        self.text, self.pause = text, pause

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        if self.script:
            async for item in super().stream(request):
                yield item
            return
        self.requests.append(request)
        yield Usage(100)
        for i, word in enumerate(self.text.split(" ")):
            await asyncio.sleep(self.pause)
            yield TextChunk(word if i == 0 else " " + word)
        yield Usage(100, 50)
        yield Finish("stop")


def live(h, channel: int = GENERAL) -> list:
    return [m for m in h.standin.messages(channel) if not m.deleted]


def assert_nothing_stuck(h, channel: int = GENERAL) -> None:
    for m in live(h, channel):
        assert not m.loading, f"stuck on thinking…: {m}"
        assert not m.content.endswith(CURSOR), f"stuck writing: {m.content!r}"
    assert h.standin.validation_errors == [] and h.standin.unknown_routes == []


async def invoke(h, name: str, options: dict | None = None, *, channel: int = GENERAL, user: int = PLAYER):
    """Start a command without waiting for it; returns the stand-in's handle and an event set when it is done."""
    inter = await h.standin.invoke(name, options or {}, channel_id=channel, user_id=user)
    return inter, h.finished.setdefault(inter.id, asyncio.Event())


async def wait_done(done: asyncio.Event, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        await done.wait()


async def stored_dm_texts(h) -> list[str]:
    session = await h.bot.store.active_session(str(GENERAL))
    return [t.content for t in await h.bot.store.all_turns(session.id) if t.role == "dm" and t.status == "complete"]


# -- 429 on edits ------------------------------------------------------------------------------------------


async def test_injected_429s_on_edits_are_waited_out_and_the_answer_completes(make_dm_bot):
    text = narration(60)
    h = await make_dm_bot(PacedProvider(text, pause=0.02))
    await h.run("start")
    h.standin.fail_next("PATCH", r"/messages/@original$", 429, times=3, retry_after=0.3)

    inter = await h.run("act", {"action": "I cross the bridge"}, timeout=15)

    [answer] = [m for m in h.visible(inter) if not m.deleted]
    assert answer.content == text
    assert sum(h.standin.ratelimited.values()) == 3
    assert await stored_dm_texts(h) == ["The adventure begins.", text]
    assert_nothing_stuck(h)


@pytest.mark.parametrize("headers", [True, False], ids=["ratelimit-headers", "bare-429s"])
async def test_discords_real_edit_limit_slows_the_stream_but_loses_nothing(make_dm_bot, headers):
    """Discord's 5 edits per 2 s per interaction token, with the streamer set to edit as fast as config allows.
    Without the X-RateLimit headers discord.py cannot see the limit coming and meets real 429s."""
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=[guild_spec()],
                                   limits=Limits(interaction=(5, 2.0)), ratelimit_headers=headers).start()
    text = narration(40)
    h = await make_dm_bot(PacedProvider(text, pause=0.04), standin=standin, discord={"edit_interval_seconds": 0.2})
    await h.run("start")

    inter = await h.run("act", {"action": "I run"}, timeout=15)

    [answer] = [m for m in h.visible(inter) if not m.deleted]
    assert answer.content == text
    assert [r.content for r in answer.history if r.content][-1] == text
    if not headers:
        assert sum(standin.ratelimited.values()) >= 1  # the limit was really met
    assert_nothing_stuck(h)


# -- 500 on a follow-up ----------------------------------------------------------------------------------


async def test_a_500_on_a_follow_up_is_retried_without_losing_or_doubling_text(make_dm_bot):
    text = narration(700)  # several thousand characters: the original message plus follow-ups
    assert len(text) > 2 * 2000
    h = await make_dm_bot(PacedProvider(text, pause=0.0))
    await h.run("start")
    h.standin.fail_next("POST", r"^/webhooks/\d+/[^/]+$", 500, times=1)

    inter = await h.run("act", {"action": "I keep walking"}, timeout=15)

    parts = [m.content for m in h.visible(inter) if not m.deleted]
    assert len(parts) >= 3 and all(len(p) <= 2000 for p in parts)
    assert " ".join(parts).split() == text.split()  # every word once, in order
    posts = [r for r in h.standin.requests if r.method == "POST" and r.route == "/webhooks/{webhook_id}/{webhook_token}"]
    assert [r.status for r in posts][:2] == [500, 200]
    assert await stored_dm_texts(h) == ["The adventure begins.", text]
    assert_nothing_stuck(h)


# -- the interaction token dies ----------------------------------------------------------------------------


async def test_an_expired_token_mid_answer_continues_in_the_channel(make_dm_bot):
    gate = Gate()
    first, rest = narration(12), narration(30)
    provider = ScriptedProvider(reply("The adventure begins."), [Usage(100), TextChunk(first), gate,
                                                                   TextChunk(" " + rest), Usage(100, 50), Finish("stop")])
    h = await make_dm_bot(provider)
    await h.run("start")
    inter, done = await invoke(h, "act", {"action": "I wait"})
    await h.standin.wait_for(lambda: inter.original and inter.original.content.startswith(first))
    h.standin.expire_interaction(inter)
    gate.open()
    await wait_done(done)

    original = inter.original
    continued = [m for m in live(h) if m.interaction_id is None and m.author_id == BOT_ID]
    assert continued, "the rest of the answer must reach the channel"
    shown = original.content.removesuffix(CURSOR).rstrip() + " " + " ".join(m.content for m in continued)
    assert shown.split() == f"{first} {rest}".split()  # nothing lost, nothing shown twice
    assert not any(m.content.endswith(CURSOR) for m in continued)
    assert not original.loading


async def test_the_token_deadline_is_met_before_discord_expires_it(make_dm_bot, monkeypatch):
    """The streamer stops using the token before it dies (15 min minus a margin): the original message is
    finished cleanly (no cursor left) and the answer goes on in a channel message."""
    monkeypatch.setattr(bot.discord_sink, "TOKEN_LIFETIME", datetime.timedelta(seconds=30.5))  # deadline: +0.5 s
    text = narration(80)
    # Edits every 0.5 s: the continuation is a channel message, under Discord's 5 edits per 5 s per channel.
    h = await make_dm_bot(PacedProvider(text, pause=0.02, opening=None), discord={"edit_interval_seconds": 0.5})

    inter = await h.run("start", timeout=15)

    continued = [m for m in live(h) if m.interaction_id is None and m.author_id == BOT_ID]
    assert continued
    words = inter.original.content.split() + " ".join(m.content for m in continued).split()
    assert words == text.split()
    assert_nothing_stuck(h)


# -- no permission to post ---------------------------------------------------------------------------------


async def test_no_permission_to_post_tells_the_player_and_the_operator(make_dm_bot, monkeypatch, caplog):
    """/start in a channel where the bot may not send messages works through the interaction (webhooks need
    no channel permission) until the token must be given up; then the rest cannot be posted. The player is
    told privately what permission is missing (the token still works for the margin), the operator by a log
    line, and the bot does not hammer Discord with forbidden requests."""
    monkeypatch.setattr(bot.discord_sink, "TOKEN_LIFETIME", datetime.timedelta(seconds=30.5))  # deadline: +0.5 s
    h = await make_dm_bot(PacedProvider(narration(80), pause=0.02, opening=None))
    caplog.set_level(logging.WARNING)

    inter = await h.run("start", {"premise": "a locked room"}, channel=LOCKED, timeout=15)

    forbidden = [r for r in h.standin.requests if r.status == 403]
    assert len(forbidden) == 1  # one attempt, then the streamer stops instead of earning invalid-request strikes
    notes = [m for m in h.visible(inter) if m.ephemeral and not m.deleted]
    assert len(notes) == 1, [m.content for m in h.visible(inter)]
    assert "Send Messages" in notes[0].content and "admin" in notes[0].content.lower()
    assert any("Send Messages" in r.getMessage() and str(LOCKED) in r.getMessage() for r in caplog.records)
    assert_nothing_stuck(h, LOCKED)


async def test_no_permission_after_the_token_died_is_logged_for_the_operator(make_dm_bot, caplog):
    gate = Gate()
    provider = ScriptedProvider([Usage(100), TextChunk("The door is locked."), gate, TextChunk(" It opens."),
                                 Usage(100, 10), Finish("stop")])
    h = await make_dm_bot(provider)
    caplog.set_level(logging.WARNING)
    inter, done = await invoke(h, "start", channel=LOCKED)
    await h.standin.wait_for(lambda: inter.original and "locked" in inter.original.content)
    h.standin.expire_interaction(inter)
    gate.open()
    await wait_done(done)

    assert len([r for r in h.standin.requests if r.status == 403]) == 1
    line = next(r.getMessage() for r in caplog.records if str(LOCKED) in r.getMessage())
    assert "Send Messages" in line


# -- gateway reconnect -------------------------------------------------------------------------------------


async def no_identify_pause(shard_id: int | None, *, initial: bool = False) -> None:
    pass


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "identify-afresh"])
async def test_a_gateway_reconnect_mid_answer_does_not_disturb_it(make_dm_bot, resume):
    gate = Gate()
    first, rest = narration(10), narration(25)
    provider = ScriptedProvider(reply("The adventure begins."), [Usage(100), TextChunk(first), gate,
                                                                   TextChunk(" " + rest), Usage(100, 50), Finish("stop")])
    h = await make_dm_bot(provider)
    h.bot.before_identify_hook = no_identify_pause  # discord.py waits 5 s before identifying again
    await h.run("start")
    inter, done = await invoke(h, "act", {"action": "I listen"})
    await h.standin.wait_for(lambda: inter.original and inter.original.content.startswith(first))

    identifies, resumes = h.standin.identifies, h.standin.resumes
    await h.standin.reconnect(resume=resume, wait=False)
    gate.open()  # the answer goes on over REST while the gateway is away
    await wait_done(done)
    await h.standin.wait_for(lambda: (h.standin.resumes > resumes) if resume else (h.standin.identifies > identifies))

    [answer] = [m for m in h.visible(inter) if not m.deleted]
    assert answer.content == f"{first} {rest}"
    again = await h.run("act", {"action": "And again"})  # commands arrive over the new connection
    assert [m.content for m in h.visible(again) if not m.deleted] == ["The DM answers."]
    assert await stored_dm_texts(h) == ["The adventure begins.", f"{first} {rest}", "The DM answers."]
    assert_nothing_stuck(h)
