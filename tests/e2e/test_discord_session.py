"""A whole session, end to end: `dungeon-master run` as a subprocess against the local Discord stand-in and a
local LLM server (llmock), on both providers. Checked as a user would see the channel."""

from __future__ import annotations

import pytest

from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, OTHER, PLAYER, TOKEN, guild_spec
from tests.e2e.botproc import CURSOR, clean_env, config_text, settled, start_bot
from tests.standin import DiscordStandIn

NARRATION = " ".join(["The lantern gutters as the stairs spiral up into the dark, each step groaning underfoot."] * 3)


@pytest.mark.parametrize("provider, path", [("openai", "/v1"), ("anthropic", "/anthropic")])
async def test_a_whole_session(tmp_path, llmock, provider, path):
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                   guilds=[guild_spec()]).start()
    model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
    (tmp_path / "config.toml").write_text(config_text(standin, provider=provider, base_url=llmock.url + path,
                                                      model=model))
    llmock.tool_mode("off")
    llmock.reply("Welcome to the lighthouse at the end of the world. What do you do?")
    llmock.call_tool("roll_dice", {"notation": "1d20+2", "reason": "the ghost's ambush", "for_whom": "the ghost"})
    llmock.reply(NARRATION)
    bot = await start_bot(tmp_path, clean_env(DISCORD_TOKEN=TOKEN))
    try:
        await standin.wait_ready(timeout=30)
        await standin.wait_for_commands("start", "act", "roll", "tokens", "end", "session", "budget", timeout=30)
        assert standin.command_puts[None] == 1

        start = await standin.invoke("start", {"premise": "a haunted lighthouse"}, channel_id=GENERAL, user_id=PLAYER)
        [opening] = await settled(standin, start)
        assert opening.content == "Welcome to the lighthouse at the end of the world. What do you do?"
        assert not opening.ephemeral

        llmock.pace(40)  # the next answer streams word by word for a few seconds
        act = await standin.invoke("act", {"action": "I climb the stairs"}, channel_id=GENERAL, user_id=PLAYER)
        [answer] = await settled(standin, act, timeout=40)
        llmock.pace(0)
        assert "🎲 **The DM, for the ghost** rolls `1d20+2` for *the ghost's ambush*" in answer.content
        assert answer.content.endswith(NARRATION)
        writing = [r.content for r in answer.history if r.content.endswith(CURSOR)]
        assert len(writing) >= 3, f"only {len(writing)} intermediate states were shown"
        assert all(len(r.content) <= 2000 for r in answer.history)

        roll = await standin.invoke("roll", {"dice": "1d20+3", "reason": "Perception"}, channel_id=GENERAL,
                                    user_id=OTHER)
        [rolled] = await settled(standin, roll)
        assert "rolls `1d20+3` for *Perception*" in rolled.content and not rolled.ephemeral

        tokens = await standin.invoke("tokens", {}, channel_id=GENERAL, user_id=PLAYER)
        [budget] = await settled(standin, tokens)
        assert budget.ephemeral and "used of 100,000" in budget.content

        end = await standin.invoke("end", {}, channel_id=GENERAL, user_id=PLAYER)
        [over] = await settled(standin, end)
        assert "The adventure is over. 5 turns were played" in over.content  # opening, act, DM roll, answer, roll

        if standin.validation_skipped_reason:
            print(f"OpenAPI validation skipped: {standin.validation_skipped_reason}")
        assert standin.validation_errors == [] and standin.unknown_routes == []
        assert sum(standin.ratelimited.values()) == 0
        assert not any(m.loading for m in standin.messages(GENERAL))
        assert not any(m.pinged_everyone or m.pinged_users for m in standin.messages(GENERAL))
    finally:
        output = await bot.stop()
        await standin.stop()
    assert "Traceback" not in output, output
