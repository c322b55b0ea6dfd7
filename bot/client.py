"""The discord.py client: intents, allowed mentions, set-up, cog loading and command registration."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import Config
from bot.dm.service import DMService
from bot.engine import build_provider
from bot.llm.base import LLMProvider
from bot.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.sessions", "cogs.actions", "cogs.dice", "cogs.tokens", "cogs.admin")

# Only what the bot uses: read and post in channels and threads, embed links, read history for context.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    read_message_history=True,
)
INVITE_SCOPES = ("bot", "applications.commands")


def point_at(config: Config) -> None:
    """Send discord.py's REST and gateway traffic where the configuration says (Discord by default)."""
    discord.http.Route.BASE = config.discord.api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.discord.gateway_url)


class DungeonMasterBot(commands.Bot):
    """Slash commands only: no privileged intents, and model text can never ping anyone."""

    def __init__(self, config: Config, *, provider: LLMProvider | None = None, engine: bool = True,
                 force_sync: bool = False, sync_guild: int | None = None, **options: object) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **options,
        )
        self.config = config
        self._provider = provider
        self._engine = engine  # False for `dungeon-master sync`: commands only, no store or LLM
        self._force_sync = force_sync
        self._sync_guild = sync_guild
        self.store: SQLiteStore | None = None
        self.dm: DMService | None = None
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        self.store = SQLiteStore(self.config.sqlite_path)
        await self.store.open()
        if self.store.interrupted_on_open:
            log.warning("%d turns were cut by the last stop; they are kept as interrupted",
                        self.store.interrupted_on_open)
        if self._engine:
            self._provider = self._provider or build_provider(self.config)
            self.dm = DMService(self.config, self.store, self._provider)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.register_commands()

    async def on_ready(self) -> None:
        log.info("ready as %s in %d servers; slash commands: %s", self.user, len(self.guilds),
                 ", ".join(f"/{c.name}" for c in self.tree.get_commands()))

    async def close(self) -> None:
        await super().close()
        if self._provider is not None:
            await self._provider.aclose()
        if self.store is not None:
            await self.store.close()

    # -- command registration -------------------------------------------------------------------------------

    def command_hash(self) -> str:
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def register_commands(self) -> None:
        """Register the slash commands per ``sync_commands``. "global" registers only when the command set
        changed since the last registration (Discord allows 200 command creations a day per guild)."""
        assert self.store is not None
        mode, guild_id = self.config.discord.sync_commands, self.config.discord.dev_guild_id
        if self._force_sync:
            mode, guild_id = ("guild", self._sync_guild) if self._sync_guild else ("global", None)
        if mode == "off":
            return
        if mode == "guild":
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("registered %d commands to guild %s", len(synced), guild_id)
            return
        digest = self.command_hash()
        key = f"commands:{self.application_id}"
        if not self._force_sync and await self.store.get_meta(key) == digest:
            log.info("slash commands unchanged since the last registration; not registering again")
            return
        synced = await self.tree.sync()
        await self.store.set_meta(key, digest)
        log.info("registered %d global commands (they can take a few minutes to appear)", len(synced))

    # -- errors ---------------------------------------------------------------------------------------------

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        """The last resort: a short private message, never a traceback, never a stuck "thinking…"."""
        log.error("command /%s failed", interaction.command.name if interaction.command else "?",
                  exc_info=error)
        from bot.discord_turn import refuse

        await refuse(interaction, "Something went wrong on our side; it has been logged. Try again.")


def run_bot(config: Config) -> int:
    point_at(config)
    bot = DungeonMasterBot(config)
    bot.run(config.secrets.discord_token, log_handler=None)
    return 0


async def sync_now(config: Config, *, guild_id: int | None) -> int:
    """`dungeon-master sync`: log in, register the commands, log out (no gateway connection needed)."""
    point_at(config)
    bot = DungeonMasterBot(config, engine=False, force_sync=True, sync_guild=guild_id)
    async with bot:
        await bot.login(config.secrets.discord_token)
    print(f"Registered the slash commands {'to guild ' + str(guild_id) if guild_id else 'globally'}.")
    return 0


async def invite_url(config: Config) -> str:
    """The OAuth2 link that adds the bot with only the permissions it uses."""
    app_id = config.discord.application_id or config.secrets.discord_application_id
    if not app_id:
        if not config.secrets.discord_token:
            raise RuntimeError(
                "the application id is unknown: set [discord] application_id in config.toml or "
                "DISCORD_APPLICATION_ID (Developer Portal → your application → General Information), "
                "or DISCORD_TOKEN so it can be fetched")
        point_at(config)
        http = discord.http.HTTPClient(asyncio.get_running_loop())
        try:
            await http.static_login(config.secrets.discord_token)
            app_id = (await http.application_info())["id"]
        except discord.HTTPException as error:
            raise RuntimeError(f"could not fetch the application id with DISCORD_TOKEN ({error.status})") from None
        finally:
            await http.close()
    return discord.utils.oauth_url(int(app_id), permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)
