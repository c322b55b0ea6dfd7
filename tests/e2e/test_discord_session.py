"""A whole session, end to end: `dungeon-master run` as a subprocess against the local Discord stand-in and a
local LLM server (llmock), on both providers. Checked as a user would see the channel."""

from __future__ import annotations

import pytest

from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, OTHER, PLAYER, TOKEN, guild_spec
from tests.discord.test_metrics import free_port, scrape, samples
from tests.e2e.botproc import CURSOR, clean_env, config_text, settled, start_bot
from tests.standin import DiscordStandIn

NARRATION = " ".join(["The lantern gutters as the stairs spiral up into the dark, each step groaning underfoot."] * 3)


@pytest.mark.parametrize("provider, path", [("openai", "/v1"), ("anthropic", "/anthropic")])
async def test_a_whole_session(tmp_path, llmock, provider, path):
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                   guilds=[guild_spec()]).start()
    model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
    metrics_port = free_port()
    (tmp_path / "config.toml").write_text(config_text(standin, provider=provider, base_url=llmock.url + path,
                                                      model=model, extra=f"[metrics]\nport = {metrics_port}\n"))
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

        await metrics_match_the_ledger(metrics_port, tmp_path / "game.db", provider)

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


async def metrics_match_the_ledger(port, database, provider) -> None:
    """/metrics of the real bot process, read with prometheus-client's parser, against its own database."""
    import sqlite3

    status, text = await scrape(port)
    assert status == 200
    got = samples(text)
    with sqlite3.connect(database) as db:
        ledger = db.execute("SELECT SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),"
                            " SUM(cache_write_tokens), COUNT(*) FROM usage").fetchone()
    kinds = ("input", "output", "cache_read", "cache_write")
    assert [got[("dm_llm_tokens_total", (("kind", k),))] for k in kinds] == list(ledger[:4])
    assert ledger[0] > 0 and ledger[1] > 0
    # the opening, then the act's two calls (the DM's roll, then its narration); all reported usage
    assert got[("dm_llm_calls_total", (("outcome", "ok"), ("provider", provider)))] == ledger[4] == 3
    assert got[("dm_turns_total", (("outcome", "done"),))] == 2
    assert got[("dm_turn_seconds_count", ())] == 2 and got[("dm_active_adventures", ())] == 0  # /end closed it
    assert await scrape(port, "/healthz") == (200, "ok\n")
