"""The command line as a user runs it: `dungeon-master check` and `dungeon-master play` as subprocesses, the
latter against a real local OpenAI- and Anthropic-compatible server (llmock)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from llmock.testing import LLMockServer

FAKE_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.fake-discord-token-e2e"
FAKE_KEY = "sk-ant-fake-key-that-must-never-show-0042"


def dm(*args: str, cwd, env: dict | None = None, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DM_", "DISCORD_", "ANTHROPIC_", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env={**base, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def llm_server():
    with LLMockServer() as server:
        yield server


def test_check_shows_settings_and_secrets_only_as_set(tmp_path):
    result = dm("check", cwd=tmp_path, env={"DISCORD_TOKEN": FAKE_TOKEN, "ANTHROPIC_API_KEY": FAKE_KEY,
                                            "DM_LIMITS_REQUESTS_PER_MINUTE": "7"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "provider=anthropic model=claude-sonnet-5-5" in out
    assert "7 turns/min per channel" in out and "100,000 tokens per session" in out
    assert "DISCORD_TOKEN set, ANTHROPIC_API_KEY set, OPENAI_API_KEY not set" in out
    assert FAKE_TOKEN not in out + result.stderr and FAKE_KEY not in out + result.stderr


def test_a_bad_config_stops_with_one_line(tmp_path):
    (tmp_path / "config.toml").write_text("[limits]\nrequests_per_minute = 'many'\n")
    result = dm("check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dungeon-master: configuration error: config.toml: [limits] requests_per_minute must be a whole number, "
        "not a string (\"many\")"]


def test_play_without_a_key_says_what_to_set(tmp_path):
    result = dm("play", cwd=tmp_path)
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in result.stderr and ".env" in result.stderr and "base_url" in result.stderr


def test_run_without_a_token_explains_the_setup(tmp_path):
    result = dm("run", cwd=tmp_path, env={"ANTHROPIC_API_KEY": FAKE_KEY})
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr and "discord.com/developers/applications" in result.stderr
    assert "dungeon-master invite" in result.stderr


@pytest.mark.parametrize("provider, path", [("openai", "/v1"), ("anthropic", "/anthropic")])
def test_play_an_opening_and_two_actions_against_a_local_server(tmp_path, llm_server, provider, path):
    env = {"DM_LLM_PROVIDER": provider, "DM_LLM_MODEL": "claude-haiku-4-5" if provider == "anthropic" else "llama3",
           "DM_LLM_BASE_URL": llm_server.url + path, "DM_DATABASE_URL": "sqlite:///game.db"}
    script = "A lighthouse at the end of the world\nI climb the stairs\n/roll 1d20+3 adv perception\n" \
             "/tokens\nI open the lantern room\n/quit\n"
    result = dm("play", cwd=tmp_path, env=env, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rolled 2d20kh1+3 with advantage for \"perception\"" in out
    assert "Tokens:" in out and "over 4 turns" in out  # opening, action, roll (a turn the DM sees)
    assert "Farewell! Your adventure is saved." in out
    with sqlite3.connect(tmp_path / "game.db") as db:
        rows = db.execute("SELECT role, status FROM turns ORDER BY seq").fetchall()
        calls = db.execute("SELECT COUNT(*), SUM(input_tokens) > 0 FROM usage").fetchone()
    assert rows == [("dm", "complete"), ("player", "complete"), ("dm", "complete"), ("roll", "complete"),
                    ("player", "complete"), ("dm", "complete")]
    assert calls[0] >= 3 and calls[1] == 1

    again = dm("play", cwd=tmp_path, env=env, stdin="/quit\n")
    assert "Continuing your adventure: A lighthouse at the end of the world" in again.stdout


INVITE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 38) | (1 << 35) | (1 << 14) | (1 << 16)  # view, send, in threads, create public threads, embed, history


def test_invite_prints_a_least_privilege_link(tmp_path):
    result = dm("invite", cwd=tmp_path, env={"DISCORD_APPLICATION_ID": "123456789012345678"})
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("https://discord.com/oauth2/authorize?client_id=123456789012345678")
    assert "scope=bot+applications.commands" in url and f"permissions={INVITE_PERMISSIONS}" in url
    missing = dm("invite", cwd=tmp_path)
    assert missing.returncode == 2 and "DISCORD_APPLICATION_ID" in missing.stderr


async def test_invite_fetches_the_application_id_and_sync_registers(tmp_path):
    import asyncio

    from tests.discord.conftest import APP_ID, BOT_ID, GUILD, TOKEN, guild_spec
    from tests.standin import DiscordStandIn

    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                              guilds=[guild_spec()]) as standin:
        env = {"DISCORD_TOKEN": TOKEN, "DM_DISCORD_API_BASE_URL": standin.api_base_url,
               "DM_DISCORD_GATEWAY_URL": standin.gateway_url}
        invite = await asyncio.to_thread(dm, "invite", cwd=tmp_path, env=env)
        assert f"client_id={APP_ID}" in invite.stdout, invite.stderr
        synced = await asyncio.to_thread(dm, "sync", "--guild", str(GUILD), cwd=tmp_path, env=env)
        assert synced.returncode == 0, synced.stderr
        assert f"Registered the slash commands to guild {GUILD}" in synced.stdout
        assert {c["name"] for c in standin.commands(GUILD)} >= {"start", "act", "roll", "tokens", "end"}
        assert standin.commands() == []  # nothing global: --guild registers to that server only
