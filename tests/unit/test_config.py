"""Configuration: the shipped config.toml loads, and each wrong key, type or value stops the start with one
line that names the key and says what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path, text: str, environ: dict | None = None) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, environ=environ or {}, env_file=tmp_path / ".env")


def error(tmp_path, text: str, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_shipped_config_toml_is_valid_and_documents_every_key(tmp_path):
    config = load_config(ROOT / "config.toml", environ={}, env_file=tmp_path / ".env")
    assert config.llm.provider in ("anthropic", "openai")
    shipped = (ROOT / "config.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    from dataclasses import fields
    for section in ("discord", "llm", "retry", "limits", "database", "dm", "metrics"):
        assert f"[{section}]" in shipped
        for f in fields(getattr(config, section)):
            assert f"{f.name} " in shipped or f"# {f.name}" in shipped, f"config.toml lacks [{section}] {f.name}"
            assert f"`{f.name}`" in readme, f"README lacks [{section}] {f.name}"


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={}, env_file=tmp_path / ".env")
    assert config.source == "defaults"
    assert config.limits.requests_per_minute == 20
    assert config.limits.tokens_per_session == 100_000
    assert config.retry.attempts == 3 and config.retry.initial_backoff_seconds == 1.0
    assert config.dm.history_messages == 20
    assert config.database.url == "sqlite:///data/dungeon-master.db"
    assert config.discord.sync_commands == "global"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[llm]\nmodle = 'x'", "[llm] modle is not a known key; known keys in [llm]: provider, model,"),
        ("[llm]\nprovider = 'gemini'", '[llm] provider = "gemini" is not allowed; use one of: "anthropic", "openai"'),
        ("[limits]\nrequests_per_minute = '20'", "[limits] requests_per_minute must be a whole number, not a string"),
        ("[limits]\nrequests_per_minute = 0", "[limits] requests_per_minute = 0 is out of range; it must be between 1"),
        ("[limits]\ntokens_per_session = 1.5", "[limits] tokens_per_session must be a whole number, not a number"),
        ("[retry]\nattempts = true", "[retry] attempts must be a whole number, not true/false"),
        ("[llm]\ntemperature = 3", "[llm] temperature = 3.0 is out of range; it must be between 0 and 2"),
        ("[llm]\ntemperature = 1.5", "[llm] temperature = 1.5 is out of range for Anthropic, which accepts 0 to 1"),
        ("[limits]\nrolls_per_minute = 0", "[limits] rolls_per_minute = 0 is out of range"),
        ("[discord]\nsync_commands = 'sometimes'", '[discord] sync_commands = "sometimes" is not allowed'),
        ("[discord]\nsync_commands = 'guild'", "sync_commands = \"guild\" needs dev_guild_id"),
        ("[discord]\napi_base_url = 'discord.com'", '[discord] api_base_url = "discord.com" must start with "http://…"'),
        ("[database]\nurl = 'mysql://me:hunter22@x/y'", '[database] url = "mysql://me:***@x/y" must start with'),
        ("[limits]\nbackend = 'memcached://x'", '[limits] backend = "memcached://x" must start with "memory://…"'),
        ("[discord]\ntoken = 'abc'", "[discord] token: secrets are never read from config.toml; set DISCORD_TOKEN"),
        ("[llm]\napi_key = 'abc'", "secrets are never read from config.toml"),
        ("[llmm]\nmodel = 'x'", "llmm is not a known section; sections are: [discord], [llm]"),
        ("llm = 3", "llm must be a table ([llm]), not an integer"),
        ("[retry]\ninitial_backoff_seconds = 5.0\nmax_backoff_seconds = 2.0", "max_backoff_seconds must be at least"),
        ("[prices.'my-model']\ninput = -1", "[prices.\"my-model\"] input must be a number of USD per million"),
        ("[prices.'my-model']\ninptu = 1", "[prices.\"my-model\"] inptu is not a known key"),
        ("[llm\nmodel = 'x'", "not valid TOML"),
        ("[discord]\nshard_ids = [0]", "[discord] shard_ids needs shard_count"),
        ("[discord]\nshard_count = 2\nshard_ids = [0, 2]", "shard_ids = [0, 2] must be below shard_count = 2"),
        ("[discord]\nshard_count = 2\nshard_ids = 1", "[discord] shard_ids must be a non-empty list, e.g. [0, 1]"),
        ("[discord]\nshard_count = 2\nshard_ids = []", "[discord] shard_ids must be a non-empty list"),
        ("[discord]\nshard_count = 2\nshard_ids = [1, 1]", "[discord] shard_ids = [1, 1] lists a value twice"),
        ("[discord]\nshard_count = 2\nshard_ids = ['a']", "[discord] shard_ids[0] must be a whole number"),
        ("[discord]\nshard_count = 0", "[discord] shard_count = 0 is out of range"),
        ("[limits]\nkey_prefix = 'a b'", "[limits] key_prefix = \"a b\" must be letters, digits"),
    ],
)
def test_each_mistake_has_its_one_line_message(tmp_path, text, expected):
    assert expected in error(tmp_path, text)


def test_shards_from_the_file_or_the_environment(tmp_path):
    assert not load(tmp_path, "").discord.sharded, "unset: one unsharded connection, as before"
    config = load(tmp_path, "[discord]\nshard_count = 4\nshard_ids = [2, 3]")
    assert config.discord.shard_count == 4 and config.discord.shard_ids == (2, 3)
    config = load(tmp_path, "", {"DM_DISCORD_SHARD_COUNT": "4", "DM_DISCORD_SHARD_IDS": "[1]"})
    assert config.discord.sharded and config.discord.shard_ids == (1,)
    assert load(tmp_path, "[discord]\nshard_count = 3").discord.shard_ids is None  # all three shards


def test_environment_overrides_name_their_variable(tmp_path):
    config = load(tmp_path, "[llm]\nmodel = 'a'", {"DM_LLM_MODEL": "b", "DM_LIMITS_REQUESTS_PER_MINUTE": "7"})
    assert config.llm.model == "b" and config.limits.requests_per_minute == 7
    message = error(tmp_path, "", {"DM_LIMITS_REQUESTS_PER_MINUTE": "lots"})
    assert message.startswith("DM_LIMITS_REQUESTS_PER_MINUTE (environment) must be a whole number")
    assert "unknown section" in error(tmp_path, "", {"DM_FOO_BAR": "1"})


def test_secrets_come_from_environment_then_dotenv_and_never_show(tmp_path):
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=sk-from-dotenv-123\nDISCORD_TOKEN=from-dotenv\n")
    config = load(tmp_path, "", {"DISCORD_TOKEN": "tok-from-env-456"})
    assert config.secrets.discord_token == "tok-from-env-456"
    assert config.secrets.anthropic_api_key == "sk-from-dotenv-123"
    assert config.secrets.openai_api_key is None
    shown = repr(config)
    assert "tok-from-env-456" not in shown and "sk-from-dotenv-123" not in shown
    assert "discord_token=set" in shown and "openai_api_key=not set" in shown


def test_a_missing_file_that_was_asked_for_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", environ={}, env_file=tmp_path / ".env")
    with pytest.raises(ConfigError, match="DM_CONFIG"):
        load_config(environ={"DM_CONFIG": str(tmp_path / "nope.toml")}, env_file=tmp_path / ".env")


def test_prices_override(tmp_path):
    config = load(tmp_path, "[prices.'my-model']\ninput = 1.0\noutput = 2\n")
    price = config.prices["my-model"]
    assert (price.input, price.output, price.cache_read, price.cache_write) == (1.0, 2.0, None, None)
