"""``dungeon-master run | play | invite | sync | check | health | migrate-db`` (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config, ConfigError, load_config, read_secrets
from bot.engine import llm_setup_problem
from bot.logs import setup_logging
from bot.store import StoreError, mask_url, store_for

TOKEN_STEPS = """DISCORD_TOKEN is not set, so the bot cannot log in to Discord. To set it up:
  1. Open https://discord.com/developers/applications and press "New Application"; give it a name.
  2. On the application's "Bot" page press "Reset Token" and copy the token.
  3. Put it where the bot reads secrets: a file named .env in this folder with the line
       DISCORD_TOKEN=paste-the-token-here
     (or `export DISCORD_TOKEN=...` in your shell). Never put it in config.toml.
  4. Invite the bot to your server with the link that `dungeon-master invite` prints
     (with make: `.venv/bin/dungeon-master invite`).
  5. Start the bot again (`make run`).
To try the DM without Discord, play in the terminal: `dungeon-master play`."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dungeon-master", description="An AI Dungeon Master for Discord.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $DM_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the Discord bot")
    commands.add_parser("play", help="play an adventure in this terminal")
    commands.add_parser("invite", help="print the link that invites the bot to a server")
    sync = commands.add_parser("sync", help="register the slash commands with Discord now")
    sync.add_argument("--guild", type=int, metavar="ID", help="register to this server only (shows at once)")
    commands.add_parser("check", help="validate the configuration and show what would be used")
    commands.add_parser("health", help="ask the running bot's /healthz (exit 0 = healthy, or no [metrics] port)")
    migrate = commands.add_parser(
        "migrate-db", help="copy the configured SQLite database into an empty PostgreSQL database (stop the bot first)")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="the PostgreSQL database to copy into: postgresql://user:password@host:5432/dbname")
    for sub in commands.choices.values():
        sub.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    return parser


def describe(config: Config) -> str:
    """What ``check`` prints: the settings in use, secrets only as set / not set."""
    llm, limits, retry, discord = config.llm, config.limits, config.retry, config.discord
    s = config.secrets

    def shown(value: str | None) -> str:
        return "set" if value else "not set"

    lines = [
        f"configuration: {config.source}",
        f"llm:       provider={llm.provider} model={llm.model} base_url={llm.base_url or '(official API)'} "
        f"max_output_tokens={llm.max_output_tokens} temperature={llm.temperature} timeout={llm.timeout_seconds:g}s",
        f"database:  {mask_url(config.database.url)}",
        f"limits:    {limits.requests_per_minute} turns/min per channel, {limits.tokens_per_session:,} tokens per "
        f"session, backend={limits.backend}"
        f"{' key_prefix=' + limits.key_prefix if limits.backend.startswith('redis') else ''}, max_queued_turns={limits.max_queued_turns}",
        f"retry:     attempts={retry.attempts} backoff={retry.initial_backoff_seconds:g}-{retry.max_backoff_seconds:g}s "
        f"max_retry_after={retry.max_retry_after_seconds:g}s",
        f"dm:        history_messages={config.dm.history_messages} content_rating={config.dm.content_rating} "
        f"dm_rolls={str(config.dm.dm_rolls).lower()}",
        f"memory:    summaries={str(config.memory.summaries).lower()} "
        f"summary_model={config.memory.summary_model or llm.model} summary_max_tokens="
        f"{config.memory.summary_max_tokens} max_prompt_tokens={config.memory.max_prompt_tokens}",
        "metrics:   " + (f"http://{config.metrics.host}:{config.metrics.port}/metrics and /healthz"
                          if config.metrics.port else "off ([metrics] port unset)"),
        f"caps:      {limits.monthly_tokens_per_server or 'no'} tokens/month per server, "
        f"{limits.daily_tokens_per_player or 'no'} tokens/day per player (servers may set their own with /config)",
        f"discord:   sync_commands={discord.sync_commands} edit_interval={discord.edit_interval_seconds:g}s "
        f"api={discord.api_base_url}" + (
            f" shard_count={discord.shard_count} shard_ids="
            f"{list(discord.shard_ids) if discord.shard_ids else 'all'}" if discord.sharded else ""),
        f"secrets:   DISCORD_TOKEN {shown(s.discord_token)}, ANTHROPIC_API_KEY {shown(s.anthropic_api_key)}, "
        f"OPENAI_API_KEY {shown(s.openai_api_key)}",
    ]
    from bot.llm.pricing import price_for

    price = price_for(llm.provider, llm.model, config.prices)
    lines.append(f"prices:    {llm.model}: " + (
        f"${price.input:g} in / ${price.output:g} out per million tokens" if price
        else f'unknown (add [prices."{llm.model}"] to estimate costs)'))
    return "\n".join(lines)


def database_problem(config: Config) -> str | None:
    """One line if the configured database cannot be used (unreachable, corrupt, unreadable, written by a newer
    bot), else None. Nothing is created or migrated."""
    try:
        asyncio.run(store_for(config.database.url).inspect())
    except StoreError as error:
        return f"dungeon-master: {error}"
    return None


def _url_password(url: str) -> list[str]:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def health(config: Config) -> int:
    """The container's HEALTHCHECK: 0 when /healthz answers 200, 1 otherwise. Without a metrics port there is
    nothing to ask, and the check passes (a Docker HEALTHCHECK cannot be made conditional on a setting)."""
    import urllib.error
    import urllib.request

    port = config.metrics.port
    if port is None:
        print("[metrics] port is not set: no health check to make")
        return 0
    host = "127.0.0.1" if config.metrics.host in ("0.0.0.0", "::", "") else config.metrics.host
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(response.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as error:
        print(error.read().decode(errors="replace").strip() or f"{url}: {error.code}", file=sys.stderr)
    except OSError as error:
        print(f"{url}: {getattr(error, 'reason', error)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as error:
        # The message may quote a value; if that is a secret (a key pasted into the wrong setting), blank it.
        message = str(error)
        for secret in read_secrets(os.environ, Path(".env")).values():
            message = message.replace(secret, "[redacted]") if len(secret) >= 6 else message
        print(f"dungeon-master: configuration error: {message}", file=sys.stderr)
        return 2
    setup_logging([*config.secrets.values(), *_url_password(config.database.url)])

    if args.command == "check":
        print(describe(config))
        try:
            print(f"store:     {asyncio.run(store_for(config.database.url).inspect())}")
        except StoreError as error:
            print(f"dungeon-master: {error}", file=sys.stderr)
            return 2
        problem = llm_setup_problem(config)
        if problem:
            print(f"\n{problem}", file=sys.stderr)
        if not config.secrets.discord_token:
            print("\nDISCORD_TOKEN is not set: `dungeon-master run` needs it (`play` does not).", file=sys.stderr)
        return 0

    if args.command == "migrate-db":
        from bot.store.migrate import migrate

        setup_logging([*config.secrets.values(), *_url_password(config.database.url), *_url_password(args.to)])
        try:
            print(asyncio.run(migrate(config.database.url, args.to)))
        except StoreError as error:
            print(f"dungeon-master: {error}", file=sys.stderr)
            return 2
        return 0

    if args.command == "health":
        return health(config)

    if args.command == "play":
        problem = llm_setup_problem(config)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        from bot.terminal import play

        try:
            return asyncio.run(play(config))
        except StoreError as error:
            print(f"dungeon-master: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\nFarewell! Your adventure is saved.")
            return 0

    if args.command == "invite":
        from bot.client import INVITE_PERMISSIONS, invite_url

        try:
            print(asyncio.run(invite_url(config)))
            names = {"read_messages": "View Channel", "send_messages_in_threads": "Send Messages in Threads"}
            asked = ", ".join(names.get(name, name.replace("_", " ").title()) for name, on in INVITE_PERMISSIONS if on)
            print(f"It asks for: {asked} (Create Public Threads is for /start thread:true).", file=sys.stderr)
        except RuntimeError as error:
            print(f"dungeon-master: {error}", file=sys.stderr)
            return 2
        return 0

    if not config.secrets.discord_token:
        print(TOKEN_STEPS, file=sys.stderr)
        return 2
    if args.command == "sync":
        from bot.client import sync_now

        return asyncio.run(sync_now(config, guild_id=args.guild))

    problem = llm_setup_problem(config) or database_problem(config)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from bot.client import run_bot

    return run_bot(config)
