"""compose.yaml: N shard processes over one PostgreSQL and one Redis. No Docker runs here, so the file is
checked as Compose would read it (YAML merge keys, ``${VAR:?…}`` / ``${VAR:-default}`` from .env), and every
bot service's environment is fed to the bot's own configuration loader: a typo in a DM_ variable, a shard
missing or run twice, or two processes on different databases fails here instead of in production."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOTENV = {"DISCORD_TOKEN": "test-token", "ANTHROPIC_API_KEY": "sk-ant-test", "POSTGRES_PASSWORD": "s3cret"}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op == ":?" and not value:
            raise LookupError(f"compose would stop: {arg}")
        return value if value else (arg if op == ":-" else "")

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", one, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate((ROOT / "compose.yaml").read_text(), DOTENV))


def bots(compose: dict) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in svc["environment"].items()}
            for name, svc in compose["services"].items() if svc.get("build")}


def test_required_secrets_stop_compose_when_missing():
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        interpolate((ROOT / "compose.yaml").read_text(), {"DISCORD_TOKEN": "x"})


def test_every_shard_runs_exactly_once_with_one_count(compose):
    shards = bots(compose)
    assert len(shards) >= 2
    counts = {env["DM_DISCORD_SHARD_COUNT"] for env in shards.values()}
    assert len(counts) == 1, f"every process must use the same shard_count: {counts}"
    ids = [i for env in shards.values() for i in yaml.safe_load(env["DM_DISCORD_SHARD_IDS"])]
    assert sorted(ids) == list(range(int(counts.pop()))), f"each shard id once: {ids}"


def test_each_bot_environment_is_a_valid_configuration_on_the_shared_services(compose, tmp_path):
    seen = set()
    for name, env in bots(compose).items():
        config = load_config(ROOT / "config.toml", environ=env, env_file=tmp_path / ".env")
        assert config.database.url.startswith("postgresql://") and "@postgres:5432/" in config.database.url
        assert config.limits.backend.startswith("redis://redis:6379")
        assert config.discord.sharded and config.secrets.discord_token == "test-token"
        seen.add((config.database.url, config.limits.backend, config.limits.key_prefix, config.discord.shard_count))
    assert len(seen) == 1, "all shards share one database, one Redis and one key prefix"


def test_services_have_their_volumes_and_bots_wait_for_healthy_stores(compose):
    services, volumes = compose["services"], compose["volumes"]
    for name in ("postgres", "redis"):
        assert services[name].get("healthcheck"), f"{name} needs a healthcheck the bots can wait for"
        assert services[name]["volumes"], f"{name} keeps its data on a volume"
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            assert mount.split(":")[0] in volumes, f"{name}: volume {mount} is not declared"
        if svc.get("build"):
            assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
            assert svc["volumes"], "bot shards have a volume too"
    assert (ROOT / "Dockerfile").is_file()
