"""The discord.py client: intents, allowed mentions, set-up, cog loading and command registration."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import signal
import sys

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import Config
from bot.discord_tracker import CombatTrackers
from bot.discord_pacing import RateLimitBook
from bot.dm.service import DMService
from bot.engine import build_provider
from bot.llm.base import LLMProvider
from bot.metrics import BotMetrics
from bot.metrics_server import MetricsServer
from bot.store import StoreError, store_for
from bot.store.sql import SQLStore
from bot.stop_signals import stop_on_signals

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.sessions", "cogs.actions", "cogs.dice", "cogs.tokens", "cogs.admin", "cogs.server", "cogs.party",
              "cogs.memory")

# Only what the bot uses: read and post in channels and threads, open an adventure's public thread
# (/start thread:true), embed links, read history for context.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    read_message_history=True,
)
INVITE_SCOPES = ("bot", "applications.commands")

# Intents.default(): no privileged intent. Without its message events, though: slash commands arrive whatever
# the intents, and message events would bring a MESSAGE_CREATE/UPDATE for every edit of every streamed answer,
# which the bot never reads (about a tenth of its CPU under load, see bench/).
INTENTS = discord.Intents.default()
INTENTS.guild_messages = INTENTS.dm_messages = False


def point_at(config: Config) -> None:
    """Send discord.py's REST and gateway traffic where the configuration says (Discord by default)."""
    discord.http.Route.BASE = config.discord.api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.discord.gateway_url)


RESTARTING = "The bot is restarting. Try again in a minute."


class RestartAwareTree(app_commands.CommandTree):
    """While the bot stops, a command gets a short private note instead of meeting a closed store or session."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if not getattr(self.client, "stopping", False):
            return True
        try:
            await interaction.response.send_message(RESTARTING, ephemeral=True)
        except discord.HTTPException as error:
            log.info("could not tell a user that the bot is restarting: %s", error)
        return False


class DungeonMasterBot(commands.Bot):
    """Slash commands only: no privileged intents, and model text can never ping anyone."""

    def __init__(self, config: Config, *, provider: LLMProvider | None = None, engine: bool = True,
                 force_sync: bool = False, sync_guild: int | None = None, **options: object) -> None:
        metrics = BotMetrics()  # always counted; served only when [metrics] port is set
        # Every answer discord.py receives passes through this book, which keeps Discord's rate-limit buckets for
        # the streamer (bot/discord_pacing.py): discord.py itself reads them only to sleep on an empty bucket.
        # The same trace counts Discord's 429s for the metrics (discord.py takes one trace config).
        self.ratelimits = RateLimitBook()
        trace = self.ratelimits.trace_config()
        for handler in metrics.http_trace().on_request_end:
            trace.on_request_end.append(handler)
        options.setdefault("http_trace", trace)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=INTENTS,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=RestartAwareTree,
            **options,
        )
        self.config = config
        self.metrics = metrics
        self.metrics_server: MetricsServer | None = None
        self._provider = provider
        self._engine = engine  # False for `dungeon-master sync`: commands only, no store or LLM
        self._force_sync = force_sync
        self._sync_guild = sync_guild
        self.store: SQLStore | None = None
        self.dm: DMService | None = None
        self.turns_in_flight: set[asyncio.Task[object]] = set()  # DM turns being shown (bot/discord_turn.py)
        self.trackers = CombatTrackers(  # one live message per combat, paced like the narration
            config.discord.edit_interval_seconds, pacer=self.ratelimits,
            min_edit_interval=config.discord.min_edit_interval_seconds)
        self.stopping = False
        self.handle_signals = False  # `dungeon-master run`: SIGTERM/SIGINT stop it in order (bot/stop_signals.py)
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        if self.handle_signals:  # runs in discord.py's main task: the one whose cancellation runs close()
            stop_on_signals(asyncio.current_task(), lambda: self.stopping)
        self.store = store_for(self.config.database.url)
        await self.store.open()
        self.trackers.store = self.store  # a tracker's message survives a restart
        if self.store.interrupted_on_open:
            log.warning("%d turns were cut by the last stop; they are kept as interrupted",
                        self.store.interrupted_on_open)
        if self._engine:
            self._provider = self._provider or build_provider(self.config)
            self.dm = DMService(self.config, self.store, self.metrics.observe_provider(self._provider))
        if self._engine and self.config.metrics.port:
            self.metrics_server = MetricsServer(self, self.metrics, self.config.metrics.host,
                                                self.config.metrics.port)
            await self.metrics_server.start()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.register_commands()
        # Everything loaded so far (the SDKs, discord.py, our modules) lives as long as the process: keep it out
        # of the garbage collector's full passes, which otherwise stall the event loop for 100-200 ms (bench/).
        gc.collect()
        gc.freeze()

    async def on_ready(self) -> None:
        shards = f" (shards {sorted(self.shards)} of {self.shard_count})" if self.shard_count else ""
        log.info("ready as %s in %d servers%s; slash commands: %s", self.user, len(self.guilds), shards,
                 ", ".join(f"/{c.name}" for c in self.tree.get_commands()))

    async def close(self) -> None:
        self.stopping = True  # commands from now on get "restarting" (RestartAwareTree)
        await self.stop_turns()
        if self.dm is not None:
            await self.dm.aclose()  # the cut turns' writes finish while the store is open
        await self.trackers.close()
        # discord.py leaves its "ready" timer running on close; stopped within its 2 s it would fire on a closed
        # client and print a traceback.
        ready_timer = getattr(self._connection, "_ready_task", None)
        if ready_timer is not None and not ready_timer.done():
            ready_timer.cancel()
        await super().close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self._provider is not None:
            await self._provider.aclose()
        if self.store is not None:
            await self.store.close()

    async def stop_turns(self, timeout: float = 5.0) -> None:  # docker stop allows 10 s in all
        """Cancel the DM turns in flight while Discord and the store are still up: each is stored as interrupted
        (charged what the provider reported) and its message ends with a note, instead of being cut later."""
        tasks = [task for task in self.turns_in_flight if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("stopping: %d DM turns in flight are cut and kept as interrupted", len(tasks))
            await asyncio.wait(tasks, timeout=timeout)

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
        from bot.discord_turn import refuse

        if self.stopping:  # the store or the HTTP session closed under the command: that is the whole story
            log.info("command /%s stopped by the shutdown: %s",
                     interaction.command.name if interaction.command else "?", error)
            await refuse(interaction, RESTARTING)
            return
        log.error("command /%s failed", interaction.command.name if interaction.command else "?",
                  exc_info=error)
        await refuse(interaction, "Something went wrong on our side; it has been logged. Try again.")


class ShardedDungeonMasterBot(DungeonMasterBot, commands.AutoShardedBot):
    """The same bot on discord.py's AutoShardedBot: one gateway connection per shard in ``shard_ids`` (all
    ``shard_count`` shards when unset), so several processes can split a bot's servers between them."""


def make_bot(config: Config, **options: object) -> DungeonMasterBot:
    """The sharded bot when ``[discord] shard_count`` is set, else the plain one (one connection, as before)."""
    discord_config = config.discord
    if not discord_config.sharded:
        return DungeonMasterBot(config, **options)
    shard_ids = list(discord_config.shard_ids) if discord_config.shard_ids is not None else None
    return ShardedDungeonMasterBot(config, shard_count=discord_config.shard_count, shard_ids=shard_ids, **options)


def run_bot(config: Config) -> int:
    point_at(config)
    bot = make_bot(config)
    bot.handle_signals = True
    # Until setup_hook installs the loop's handlers: `docker stop` sends SIGTERM, which would end Python on the
    # spot; make it a Ctrl-C, which asyncio turns into an orderly close.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        bot.run(config.secrets.discord_token, log_handler=None)
    except asyncio.CancelledError:  # how a stop signal ends the main task (bot/stop_signals.py): an orderly stop
        return 0
    except discord.LoginFailure:
        # One line, not a traceback (which would bypass the log's secret filter on its way to stderr).
        print("dungeon-master: Discord refused DISCORD_TOKEN (401). Copy the token again from the Developer "
              "Portal (your application → Bot → Reset Token) into .env or the environment.", file=sys.stderr)
        return 2
    except StoreError as error:  # the database went away (or was replaced) since `run` checked it
        print(f"dungeon-master: {error}", file=sys.stderr)
        return 2
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
