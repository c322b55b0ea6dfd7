"""Configuration: ``config.toml`` plus the environment, validated into typed, frozen dataclasses.

Where settings come from, last wins:
  1. the defaults below (the dataclass fields),
  2. ``config.toml`` (path from ``--config``, else ``$DM_CONFIG``, else ``./config.toml``),
  3. environment overrides ``DM_<SECTION>_<KEY>`` (e.g. ``DM_LLM_MODEL``), so a container needs no file.
Secrets come only from the environment or a ``.env`` file in the working directory (the environment wins);
a secret written in config.toml is refused. Any wrong key, type or value stops the start with one line
(``ConfigError``) that names the key and says what is allowed.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from bot.llm.pricing import Price

SECRET_NAMES = ("DISCORD_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")


class ConfigError(Exception):
    """One line naming the key and what is allowed; shown to the operator as is."""


def _rule(*, min: float | None = None, max: float | None = None, doc: str = "") -> dict[str, Any]:
    return {"min": min, "max": max, "doc": doc}


@dataclass(frozen=True)
class DiscordConfig:
    api_base_url: str = field(default="https://discord.com/api/v10", metadata=_rule(doc="url"))
    gateway_url: str = field(default="wss://gateway.discord.gg", metadata=_rule(doc="ws-url"))
    sync_commands: Literal["global", "guild", "off"] = "global"
    dev_guild_id: int | None = field(default=None, metadata=_rule(min=1))
    # the pace while Discord has reported no rate-limit bucket (no headers yet, or a server that sends none);
    # at least 0.5: Discord allows about 5 edits per 2 s on one interaction token (0.4 meets 429s at times)
    edit_interval_seconds: float = field(default=1.0, metadata=_rule(min=0.5, max=60))
    # the floor: no streamed message is edited more often, whatever room Discord's rate-limit bucket reports
    min_edit_interval_seconds: float = field(default=0.25, metadata=_rule(min=0.05, max=60))
    application_id: int | None = field(default=None, metadata=_rule(min=1))
    # Sharding (scale-out): unset = one unsharded connection, as before. With shard_count the bot runs discord.py's
    # AutoShardedBot; shard_ids (which needs shard_count) picks the shards this process runs, so N processes can
    # split them. A guild's shard is (guild_id >> 22) % shard_count.
    shard_count: int | None = field(default=None, metadata=_rule(min=1, max=100000))
    shard_ids: tuple[int, ...] | None = field(default=None, metadata=_rule(min=0, max=99999))

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None


@dataclass(frozen=True)
class LLMConfig:
    provider: Literal["anthropic", "openai"] = "anthropic"
    model: str = "claude-sonnet-5-5"
    base_url: str | None = field(default=None, metadata=_rule(doc="url"))
    max_output_tokens: int = field(default=1024, metadata=_rule(min=16, max=64000))
    temperature: float | None = field(default=0.8, metadata=_rule(min=0, max=2))
    # the longest silence tolerated; short, because the players wait meanwhile (they are told of each retry)
    timeout_seconds: float = field(default=10.0, metadata=_rule(min=1, max=600))


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = field(default=3, metadata=_rule(min=1, max=10))
    initial_backoff_seconds: float = field(default=1.0, metadata=_rule(min=0, max=60))
    max_backoff_seconds: float = field(default=20.0, metadata=_rule(min=0, max=300))
    max_retry_after_seconds: float = field(default=30.0, metadata=_rule(min=0, max=600))


@dataclass(frozen=True)
class LimitsConfig:
    requests_per_minute: int = field(default=20, metadata=_rule(min=1, max=10000))
    tokens_per_session: int = field(default=100_000, metadata=_rule(min=1000))
    backend: str = field(default="memory://", metadata=_rule(doc="limits-backend"))
    # Prepended to every rate-limit key on Redis, so several bots (or test runs) can share one Redis.
    key_prefix: str = field(default="dungeon-master", metadata=_rule(doc="key-prefix"))
    max_queued_turns: int = field(default=5, metadata=_rule(min=1, max=100))
    # server and player caps (0 = no cap); a server's admin may set its own with /config
    monthly_tokens_per_server: int = field(default=0, metadata=_rule(min=0))
    daily_tokens_per_player: int = field(default=0, metadata=_rule(min=0))
    # one player's /roll per channel per minute, so dice cannot flood a channel
    rolls_per_minute: int = field(default=30, metadata=_rule(min=1, max=10000))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = field(default="sqlite:///data/dungeon-master.db", metadata=_rule(doc="db-url"))


@dataclass(frozen=True)
class DMConfig:
    history_messages: int = field(default=20, metadata=_rule(min=2, max=200))
    persona: str = (
        "a warm, quick-witted Dungeon Master who keeps the story moving, gives every player a moment to shine "
        "and describes the world with vivid, concrete detail"
    )
    content_rating: Literal["family", "teen", "mature"] = "teen"
    max_action_chars: int = field(default=1000, metadata=_rule(min=10, max=4000))
    max_premise_chars: int = field(default=1000, metadata=_rule(min=10, max=4000))
    dm_rolls: bool = True
    # actions arriving while the DM narrates are answered together in the next turn (one LLM call)
    batch_actions: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    # unset = no metrics server; set, it serves /metrics (Prometheus text) and /healthz
    port: int | None = field(default=None, metadata=_rule(min=1, max=65535))
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class MemoryConfig:
    """Campaign memory (bot/dm/memory): the running summary, and the bound on every narration request."""

    summaries: bool = True
    # "" = the [llm] model (same provider); a cheaper model is the usual choice
    summary_model: str = ""
    summary_max_tokens: int = field(default=600, metadata=_rule(min=100, max=8000))
    max_prompt_tokens: int = field(default=30000, metadata=_rule(min=2000, max=2_000_000))


@dataclass(frozen=True)
class Secrets:
    """Read from the environment / .env only. ``repr`` never shows a value."""

    discord_token: str | None = None
    anthropic_api_key: str | None = None
    openai_api_key: str | None = None
    discord_application_id: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={'set' if getattr(self, f.name) else 'not set'}" for f in fields(self))
        return f"Secrets({shown})"

    def llm_key(self, provider: str) -> str | None:
        return self.anthropic_api_key if provider == "anthropic" else self.openai_api_key

    def values(self) -> list[str]:
        """Every secret value that is set (for scrubbing logs)."""
        return [v for f in fields(self) if f.name != "discord_application_id" and (v := getattr(self, f.name))]


@dataclass(frozen=True)
class Config:
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    dm: DMConfig = field(default_factory=DMConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    prices: Mapping[str, Price] = field(default_factory=dict)
    secrets: Secrets = field(default_factory=Secrets)
    source: str = "defaults"

    @property
    def sqlite_path(self) -> str:
        """The file behind ``database.url`` (``:memory:`` allowed)."""
        return self.database.url.removeprefix("sqlite:///")


SECTIONS: dict[str, type] = {
    "discord": DiscordConfig,
    "llm": LLMConfig,
    "retry": RetryConfig,
    "limits": LimitsConfig,
    "database": DatabaseConfig,
    "dm": DMConfig,
    "memory": MemoryConfig,
    "metrics": MetricsConfig,
}
PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
_SECRET_LIKE = ("token", "api_key", "apikey", "secret", "password")


def _fmt(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value).lower() if isinstance(value, bool) else repr(value)


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _check_value(where: str, f: Any, hint: Any, value: Any) -> Any:
    """Check one value against its field's type hint and rules; return it converted (int → float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if value == "" and hint is str:
            return None
    if origin is tuple:  # a TOML array of one scalar type, e.g. shard_ids = [0, 1]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where} must be a non-empty list, e.g. [0, 1], not {_type_name(value)} ({_fmt(value)})")
        items = tuple(_check_value(f"{where}[{i}]", f, args[0], item) for i, item in enumerate(value))
        if len(set(items)) != len(items):
            raise ConfigError(f"{where} = {_fmt(value)} lists a value twice")
        return items
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(_fmt(a) for a in args)
            raise ConfigError(f"{where} = {_fmt(value)} is not allowed; use one of: {allowed}")
        return value
    ok = (
        (hint is bool and isinstance(value, bool))
        or (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (hint is str and isinstance(value, str))
    )
    if not ok:
        want = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[hint]
        raise ConfigError(f"{where} must be {want}, not {_type_name(value)} ({_fmt(value)})")
    value = float(value) if hint is float else value
    rule = f.metadata
    lo, hi = rule.get("min"), rule.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"{where} = {_fmt(value)} is out of range; it must be {bounds}")
    _check_format(where, rule.get("doc", ""), value)
    return value


def _check_format(where: str, kind: str, value: Any) -> None:
    prefixes = {
        "url": ("http://", "https://"),
        "ws-url": ("ws://", "wss://"),
        "db-url": ("sqlite:///", "postgresql://", "postgres://"),
        "limits-backend": ("memory://", "redis://", "rediss://"),
    }.get(kind)
    if kind == "key-prefix" and not (value and value.replace("-", "").replace("_", "").replace(".", "").isalnum()):
        raise ConfigError(f"{where} = {_fmt(value)} must be letters, digits, '-', '_' or '.' (and not empty)")
    if prefixes and not str(value).startswith(prefixes):
        allowed = " or ".join(f'"{p}…"' for p in prefixes)
        if kind == "db-url":  # a URL may carry a password: never show it
            from bot.store.base import mask_url

            value = mask_url(str(value))
        raise ConfigError(f"{where} = {_fmt(value)} must start with {allowed}")


def _build_section(cls: type, table: Mapping[str, Any], name: str, origin: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        where = origin.get(key, f"[{name}] {key}")
        if key not in known:
            if any(s in key.lower() for s in _SECRET_LIKE):
                raise ConfigError(
                    f"{where}: secrets are never read from config.toml; set "
                    f"{' / '.join(SECRET_NAMES)} in the environment or a .env file"
                )
            raise ConfigError(f"{where} is not a known key; known keys in [{name}]: {', '.join(known)}")
        values[key] = _check_value(where, known[key], hints[key], value)
    return cls(**values)


def _build_prices(table: Any) -> dict[str, Price]:
    if not isinstance(table, dict):
        raise ConfigError("[prices] must be a table of models, e.g. [prices.\"my-model\"] input = 1.0 …")
    prices = {}
    for model, entry in table.items():
        where = f'[prices."{model}"]'
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with keys {', '.join(PRICE_KEYS)} (USD per million tokens)")
        unknown = set(entry) - set(PRICE_KEYS)
        if unknown:
            raise ConfigError(f"{where} {sorted(unknown)[0]} is not a known key; known keys: {', '.join(PRICE_KEYS)}")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{where} {key} must be a number of USD per million tokens, at least 0")
        # A cache price left out is billed like input (see Price).
        prices[model] = Price(**{k: float(entry[k]) if k in entry else (0.0 if k in ("input", "output") else None)
                                 for k in PRICE_KEYS})
    return prices


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``DM_LLM_MODEL=x`` → {"llm": {"model": "x"}}. Values are read as TOML scalars when they parse as one
    (``20``, ``1.5``, ``true``), else as plain strings."""
    tables: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith("DM_") or name in ("DM_CONFIG",):
            continue
        section, _, key = name[3:].lower().partition("_")
        if section not in SECTIONS:
            raise ConfigError(f"{name}: unknown section {section!r}; DM_ variables are DM_<SECTION>_<KEY> with "
                              f"SECTION one of {', '.join(s.upper() for s in SECTIONS)}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        tables.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = f"{name} (environment)"
    return tables, origin


def read_secrets(environ: Mapping[str, str], env_file: Path) -> Secrets:
    file_values = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.is_file() else {}

    def get(name: str) -> str | None:
        value = environ.get(name) or file_values.get(name)
        return value.strip() if value and value.strip() else None

    return Secrets(
        discord_token=get("DISCORD_TOKEN"),
        anthropic_api_key=get("ANTHROPIC_API_KEY"),
        openai_api_key=get("OPENAI_API_KEY"),
        discord_application_id=get("DISCORD_APPLICATION_ID"),
    )


def config_path(cli_path: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(cli_path or environ.get("DM_CONFIG") or "config.toml")


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] = ".env",
    required: bool = False,
) -> Config:
    """Load and validate. ``path=None`` → ``$DM_CONFIG`` or ``./config.toml``; a missing default file means
    defaults, a missing file that was asked for (``required`` or given explicitly) is an error."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or "DM_CONFIG" in environ
    file = config_path(str(path) if path is not None else None, environ)
    data: dict[str, Any] = {}
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read it: {exc.strerror}") from None
    elif explicit or required:
        raise ConfigError(f"{file}: no such file (the path came from "
                          f"{'--config' if path is not None else 'DM_CONFIG'})")
    env_tables, env_origin = _env_overrides(environ)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.pop(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {name} must be a table ([{name}]), not {_type_name(table)}")
        merged = {**table, **env_tables.get(name, {})}
        origin = {k: f"{file}: [{name}] {k}" for k in table}
        origin.update({k: env_origin[f"{name}.{k}"] for k in env_tables.get(name, {})})
        sections[name] = _build_section(cls, merged, name, origin)
    prices = _build_prices(data.pop("prices", {}))
    if data:
        key = next(iter(data))
        if any(s in key.lower() for s in _SECRET_LIKE):
            raise ConfigError(f"{file}: {key}: secrets are never read from config.toml; set "
                              f"{' / '.join(SECRET_NAMES)} in the environment or a .env file")
        raise ConfigError(f"{file}: {key} is not a known section; sections are: "
                          f"{', '.join(f'[{s}]' for s in [*SECTIONS, 'prices'])}")
    if sections["retry"].max_backoff_seconds < sections["retry"].initial_backoff_seconds:
        raise ConfigError(f"{file}: [retry] max_backoff_seconds must be at least initial_backoff_seconds")
    shards = sections["discord"]
    if shards.shard_ids is not None and shards.shard_count is None:
        raise ConfigError(f"{file}: [discord] shard_ids needs shard_count (the total number of shards of the bot)")
    if shards.shard_ids is not None and max(shards.shard_ids) >= shards.shard_count:
        raise ConfigError(f"{file}: [discord] shard_ids = {list(shards.shard_ids)} must be below shard_count = "
                          f"{shards.shard_count} (shards are numbered 0 to shard_count - 1)")
    llm = sections["llm"]
    if llm.provider == "anthropic" and llm.temperature is not None and llm.temperature > 1:
        raise ConfigError(f"{file}: [llm] temperature = {_fmt(llm.temperature)} is out of range for Anthropic, "
                          "which accepts 0 to 1 (OpenAI accepts 0 to 2)")
    if sections["discord"].sync_commands == "guild" and sections["discord"].dev_guild_id is None:
        raise ConfigError(f'{file}: [discord] sync_commands = "guild" needs dev_guild_id (the server to register to)')
    return Config(
        **sections,
        prices=prices,
        secrets=read_secrets(environ, Path(env_file)),
        source=str(file) if file.is_file() else "defaults",
    )
