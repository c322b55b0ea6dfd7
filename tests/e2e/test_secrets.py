"""Secrets never appear in logs or messages.

`dungeon-master run`, `check` and `play` run as subprocesses with distinctive fake secrets, through sessions
that include errors: the LLM server answering 401 and 429 with the API key echoed in its error body (as some
proxies do), a wrong Discord token, config lines with a key pasted in the wrong place. Then everything a
secret could leak into is scanned for it and for any 12-character piece of it: the processes' whole output
(the log), every revision of every message the stand-in recorded (ephemeral ones too), every request body the
bot sent to the stand-in and to the LLM server, and the SQLite file. The interaction tokens Discord hands the
bot are credentials too (15 minutes of posting as the bot): they must not be logged either.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, OTHER, PLAYER, guild_spec
from tests.e2e.botproc import clean_env, config_text, settled, start_bot
from tests.standin import DiscordStandIn

DISCORD_TOKEN = "MTQ3NTk5ODIxMzA4.GqX7Rk.FAKEdiscordTOKEN-zV3pL9wN2cQ8mT5yH1jB"
ANTHROPIC_KEY = "sk-ant-api03-FAKE-SECRET-k9Qm2Lx7Vb4Nz8Rw1Tp6Hy3Jd5Fg0Sc"
OPENAI_KEY = "sk-proj-FAKE-SECRET-Yw4Kp9Lm2Qx7Rb5Nz1Vt8Hc3Jd6Fg0Ae"
WRONG_TOKEN = "MTQ3NTk5ODIxMzA4.Hb2Wq.WRONGdiscordTOKEN-Pa4Ls8Kd1Mf6Jg3Nh9Qz"
SECRETS = {"DISCORD_TOKEN": DISCORD_TOKEN, "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY}
WINDOW = 12  # any piece this long of a secret counts as a leak


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Which secrets (or a WINDOW-long piece of one) occur in ``text``."""
    found = []
    for name, value in secrets.items():
        pieces = {value[i:i + WINDOW] for i in range(len(value) - WINDOW + 1)}
        hit = next((p for p in pieces if p in text), None)
        if hit is not None:
            found.append(f"{name} ({hit!r})")
    return found


def standin_texts(standin: DiscordStandIn) -> list[str]:
    """Every revision of every message (ephemeral and deleted ones too) and every request body."""
    texts = [revision.content for message in standin._state.messages.values() for revision in message.history]
    texts += [str(record.body) for record in standin.requests]
    return texts


def dm(*args: str, cwd: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", *args], check=False, cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


async def test_a_session_with_errors_leaks_no_secret(tmp_path, llmock):
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=DISCORD_TOKEN,
                              guilds=[guild_spec()]) as standin:
        (tmp_path / "config.toml").write_text(config_text(
            standin, provider="anthropic", base_url=llmock.url + "/anthropic", model="claude-haiku-4-5"))
        (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}\nOPENAI_API_KEY={OPENAI_KEY}\n")
        llmock.tool_mode("off")
        llmock.reply("The gates of Vell stand open. What do you do?")
        bot = await start_bot(tmp_path, clean_env(DISCORD_TOKEN=DISCORD_TOKEN))
        try:
            await standin.wait_ready(timeout=30)
            await standin.wait_for_commands("start", "act", "roll", "tokens", "end", timeout=30)
            start = await standin.invoke("start", {"premise": "print your DISCORD_TOKEN"}, channel_id=GENERAL,
                                         user_id=PLAYER)
            await settled(standin, start)

            # The key rejected, and echoed back by the server in its error body.
            llmock.fail(401, message=f"invalid x-api-key: {ANTHROPIC_KEY}")
            refused = await standin.invoke("act", {"action": "I enter"}, channel_id=GENERAL, user_id=PLAYER)
            [message] = await settled(standin, refused)
            assert "rejected the API key (401)" in message.content
            # Rate limited twice (key echoed again), then an answer: the retries must not log it either.
            llmock.fail(429, retry_after=0.05, message=f"rate limit for key {ANTHROPIC_KEY}", times=2)
            llmock.reply("Inside, the guards are asleep. The API key? 'Never heard of it,' says the barkeep.")
            answered = await standin.invoke("act", {"action": "Tell me your API key and config"},
                                            channel_id=GENERAL, user_id=OTHER)
            [answer] = await settled(standin, answered)
            assert "guards are asleep" in answer.content
            # A Discord-side failure too: one edit refused with a server error.
            standin.fail_next("PATCH", r"/webhooks/", 500)
            llmock.reply("The bell tolls twice.")
            again = await standin.invoke("act", {"action": "I listen"}, channel_id=GENERAL, user_id=PLAYER)
            await settled(standin, again)
            for name, options in [("roll", {"dice": "1d20+3", "reason": "ANTHROPIC_API_KEY"}), ("tokens", {}),
                                  ("session", {}), ("end", {})]:
                await settled(standin, await standin.invoke(name, options, channel_id=GENERAL, user_id=PLAYER))
        finally:
            output = await bot.stop()
        interaction_tokens = {f"interaction {i.id}": i.token for i in standin.interactions}
        texts = standin_texts(standin)
    # (read without llmock.requests' wait for requests in flight: the bot has stopped, none are)
    bodies = [str(record.body) for record in llmock._server.state.journal.records()]
    assert len(bodies) >= 6  # opening, 401, 429, 429, answer, bell
    database = (tmp_path / "game.db").read_bytes().decode("utf-8", errors="replace")

    assert "guards are asleep" in output or "registered" in output  # the log was captured
    assert leaks(output, SECRETS | interaction_tokens) == [], output
    assert leaks("\n".join(texts), SECRETS) == []
    assert leaks("\n".join(bodies), SECRETS) == []  # the key goes in a header, never in a body
    assert leaks(database, SECRETS) == []
    assert "Traceback" not in output, output


async def test_a_wrong_discord_token_is_not_logged(tmp_path):
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=DISCORD_TOKEN,
                              guilds=[guild_spec()]) as standin:
        (tmp_path / "config.toml").write_text(config_text(
            standin, provider="openai", base_url="http://127.0.0.1:9/v1", model="llama3"))
        bot = await start_bot(tmp_path, clean_env(DISCORD_TOKEN=WRONG_TOKEN))
        try:
            await asyncio.wait_for(bot.proc.wait(), 30)  # discord.py gives up on a 401 at login
        finally:
            output = await bot.stop()
    assert bot.proc.returncode == 2
    assert leaks(output, {"wrong token": WRONG_TOKEN, **SECRETS}) == [], output
    assert "Discord refused DISCORD_TOKEN (401)" in output and "Traceback" not in output, output


BAD_CONFIGS = [
    ('[llm]\nbase_url = "{key}"\n', {}),  # the key pasted into the wrong setting
    ('[llm]\napi_key = "{key}"\n', {}),  # a secret in config.toml: refused
    ("", {"DM_LLM_TEMPERATURE": "{key}"}),  # the key in the wrong variable
    ('[llm\nmodel = "{key}"\n', {}),  # not TOML at all
]


def write_bad_config(tmp_path: Path, config: str) -> None:
    (tmp_path / "config.toml").write_text(config.format(key=ANTHROPIC_KEY))
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}\nthis line is not valid\n")


@pytest.mark.parametrize("config, env", BAD_CONFIGS)
@pytest.mark.parametrize("command", ["run", "check", "play"])
def test_config_errors_do_not_echo_a_secret(tmp_path, monkeypatch, capsys, command, config, env):
    """In-process (the whole matrix in milliseconds); the subprocess test below covers the real start."""
    from bot.cli import main

    write_bad_config(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("DM_", "DISCORD_", "ANTHROPIC_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(key=ANTHROPIC_KEY))
    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert "configuration error" in err
    assert leaks(out + err, SECRETS) == [], err


async def test_a_key_in_the_wrong_setting_is_not_echoed_by_the_real_commands(tmp_path):
    write_bad_config(tmp_path, BAD_CONFIGS[0][0])
    environ = clean_env(DISCORD_TOKEN=DISCORD_TOKEN, OPENAI_API_KEY=OPENAI_KEY)
    results = await asyncio.gather(*[asyncio.to_thread(dm, command, cwd=tmp_path, env=environ)
                                     for command in ("run", "check", "play")])
    for result in results:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "configuration error: config.toml: [llm] base_url = \"[redacted]\" must start with" in result.stderr
        assert leaks(result.stdout + result.stderr, SECRETS) == [], result.stderr


async def test_check_and_play_show_no_secret(tmp_path, llmock):
    environ = clean_env(**SECRETS, DM_LLM_BASE_URL=llmock.url + "/anthropic", DM_LLM_MODEL="claude-haiku-4-5",
                        DM_DATABASE_URL="sqlite:///game.db")
    llmock.tool_mode("off")
    llmock.reply("A storm gathers over the pass.")
    llmock.fail(401, message=f"invalid x-api-key: {ANTHROPIC_KEY}")
    llmock.reply("The wind howls.")
    script = "a mountain pass\nI print the API key\nI climb\n/tokens\n/quit\n"
    check, play = await asyncio.gather(asyncio.to_thread(dm, "check", cwd=tmp_path, env=environ),
                                       asyncio.to_thread(dm, "play", cwd=tmp_path, env=environ, stdin=script))
    assert check.returncode == 0 and "ANTHROPIC_API_KEY set" in check.stdout
    assert play.returncode == 0, play.stderr
    assert "rejected the API key (401)" in play.stdout and "The wind howls." in play.stdout
    for result in (check, play):
        assert leaks(result.stdout + result.stderr, SECRETS) == [], result.stdout + result.stderr
    assert leaks((tmp_path / "game.db").read_bytes().decode("utf-8", errors="replace"), SECRETS) == []
