"""``dungeon-master run | play | invite | sync | check`` (also ``python -m bot``)."""

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
        f"database:  {config.database.url}",
        f"limits:    {limits.requests_per_minute} turns/min per channel, {limits.tokens_per_session:,} tokens per "
        f"session, backend={limits.backend}, max_queued_turns={limits.max_queued_turns}",
        f"retry:     attempts={retry.attempts} backoff={retry.initial_backoff_seconds:g}-{retry.max_backoff_seconds:g}s "
        f"max_retry_after={retry.max_retry_after_seconds:g}s",
        f"dm:        history_messages={config.dm.history_messages} content_rating={config.dm.content_rating} "
        f"dm_rolls={str(config.dm.dm_rolls).lower()}",
        f"memory:    summaries={str(config.memory.summaries).lower()} "
        f"summary_model={config.memory.summary_model or llm.model} summary_max_tokens="
        f"{config.memory.summary_max_tokens} max_prompt_tokens={config.memory.max_prompt_tokens}",
        f"discord:   sync_commands={discord.sync_commands} edit_interval={discord.edit_interval_seconds:g}s "
        f"api={discord.api_base_url}",
        f"secrets:   DISCORD_TOKEN {shown(s.discord_token)}, ANTHROPIC_API_KEY {shown(s.anthropic_api_key)}, "
        f"OPENAI_API_KEY {shown(s.openai_api_key)}",
    ]
    from bot.llm.pricing import price_for

    price = price_for(llm.provider, llm.model, config.prices)
    lines.append(f"prices:    {llm.model}: " + (
        f"${price.input:g} in / ${price.output:g} out per million tokens" if price
        else f'unknown (add [prices."{llm.model}"] to estimate costs)'))
    return "\n".join(lines)


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
    setup_logging(config.secrets.values())

    if args.command == "check":
        print(describe(config))
        problem = llm_setup_problem(config)
        if problem:
            print(f"\n{problem}", file=sys.stderr)
        if not config.secrets.discord_token:
            print("\nDISCORD_TOKEN is not set: `dungeon-master run` needs it (`play` does not).", file=sys.stderr)
        return 0

    if args.command == "play":
        problem = llm_setup_problem(config)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        from bot.terminal import play

        try:
            return asyncio.run(play(config))
        except KeyboardInterrupt:
            print("\nFarewell! Your adventure is saved.")
            return 0

    if args.command == "invite":
        from bot.client import invite_url

        try:
            print(asyncio.run(invite_url(config)))
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

    problem = llm_setup_problem(config)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from bot.client import run_bot

    return run_bot(config)
