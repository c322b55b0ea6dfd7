"""A whole session, end to end: `dungeon-master run` as a subprocess against the local Discord stand-in and a
local LLM server (llmock), on both providers. Checked as a user would see the channel."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, OTHER, PLAYER, TOKEN, guild_spec
from tests.standin import DiscordStandIn

CURSOR = "▌"
NARRATION = " ".join(["The lantern gutters as the stairs spiral up into the dark, each step groaning underfoot."] * 3)


def config_text(standin: DiscordStandIn, llm_url: str, provider: str) -> str:
    model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
    return f"""
[discord]
api_base_url = "{standin.api_base_url}"
gateway_url = "{standin.gateway_url}"
edit_interval_seconds = 0.4

[llm]
provider = "{provider}"
model = "{model}"
base_url = "{llm_url}"
timeout_seconds = 10

[retry]
initial_backoff_seconds = 0.1
max_backoff_seconds = 0.5

[database]
url = "sqlite:///game.db"
"""


async def settled(standin: DiscordStandIn, inter, timeout: float = 20.0):
    """Wait until the interaction's answer is final: no "thinking…", no cursor, or a private message."""

    def done():
        seen = [m for m in standin.messages(inter.channel_id, viewer_id=inter.user_id)
                if m.id == inter.original_id or m.id in inter.followup_ids]
        final = [m for m in seen if not m.deleted and not m.loading and not m.content.endswith(CURSOR)]
        return final if final and len(final) == len([m for m in seen if not m.deleted]) else None

    return await standin.wait_for(done, timeout)


@pytest.mark.parametrize("provider, path", [("openai", "/v1"), ("anthropic", "/anthropic")])
async def test_a_whole_session(tmp_path, llmock, provider, path):
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                   guilds=[guild_spec()]).start()
    (tmp_path / "config.toml").write_text(config_text(standin, llmock.url + path, provider))
    llmock.tool_mode("off")
    llmock.reply("Welcome to the lighthouse at the end of the world. What do you do?")
    llmock.call_tool("roll_dice", {"notation": "1d20+2", "reason": "the ghost's ambush", "for_whom": "the ghost"})
    llmock.reply(NARRATION)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DM_", "ANTHROPIC_", "OPENAI_"))}
    env.update(DISCORD_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    bot = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
                                               stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
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
        if bot.returncode is None:
            bot.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(bot.wait(), 15)
            except TimeoutError:
                bot.kill()
        output = (await bot.stdout.read()).decode()
        await standin.stop()
    assert "Traceback" not in output, output
