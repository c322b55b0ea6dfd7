"""Fixtures for the stand-in's own tests: a stand-in, and a plain discord.py Bot pointed at it.

The bot's commands are test instruments, not the product's: each records what discord.py returned or
raised so a test can assert both sides (what the stand-in served, what the library made of it).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from tests.standin import DiscordStandIn, Limits

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
TOKEN = "standin-test-token"
GUILD = 800_000_000_000_000_001
GENERAL = 800_000_000_000_000_010  # a text channel everyone may write in
LOCKED = 800_000_000_000_000_011  # the bot may read but not send here
THREAD = 800_000_000_000_000_012
PLAYER = 700_000_000_000_000_001
OTHER = 700_000_000_000_000_002
SEND_MESSAGES = 1 << 11


def guild_spec() -> dict[str, Any]:
    return {
        "id": GUILD, "name": "Stand-in Keep",
        "channels": [
            {"id": GENERAL, "name": "general"},
            {"id": LOCKED, "name": "announcements", "position": 1,
             "overwrites": [{"id": BOT_ID, "type": "member", "deny": SEND_MESSAGES}]},
            {"id": THREAD, "name": "side-quest", "type": "thread", "parent_id": GENERAL},
        ],
        "members": [{"id": PLAYER, "name": "aria"}, {"id": OTHER, "name": "brom"}],
    }


@dataclass
class Outcomes:
    """What each command callback ended with, keyed by interaction id."""

    results: dict[int, Any] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def record(self, interaction: discord.Interaction, value: Any) -> None:
        self.results[interaction.id] = value
        self.changed.set()

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def wait(self, interaction_id: int, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while interaction_id not in self.results:
                self.changed.clear()
                await self.changed.wait()
        return self.results[interaction_id]


def build_bot(outcomes: Outcomes) -> commands.Bot:
    bot = commands.Bot(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                       allowed_mentions=discord.AllowedMentions.none(), guild_ready_timeout=0.05)

    async def attempt(interaction: discord.Interaction, action: Awaitable[Any]) -> Any:
        try:
            return await action
        except discord.HTTPException as exc:
            outcomes.record(interaction, exc)
            raise

    @bot.tree.command(description="Roll dice")
    @app_commands.describe(dice="Dice expression", reason="Why")
    async def roll(interaction: discord.Interaction, dice: str, reason: Optional[str] = None) -> None:
        await interaction.response.send_message(f"🎲 {dice} ({reason or 'no reason'}) @everyone")
        outcomes.record(interaction, (dice, reason))

    @bot.tree.command(description="Deferred narration with follow-ups")
    async def story(interaction: discord.Interaction, steps: int = 3) -> None:
        await interaction.response.defer(thinking=True)
        await outcomes.gate("story").wait()
        text = ""
        for i in range(1, steps + 1):
            text += f" part{i}"
            await interaction.edit_original_response(content=text.strip())
        await interaction.followup.send("The end.")
        await interaction.followup.send("Only you see this.", ephemeral=True)
        outcomes.record(interaction, text.strip())

    @bot.tree.command(description="Say something in the channel")
    async def say(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(ephemeral=True)
        assert isinstance(interaction.channel, discord.abc.Messageable)
        message = await attempt(interaction, interaction.channel.send(text))
        outcomes.record(interaction, message)

    @bot.tree.command(description="Edit the deferred answer after the test says so")
    async def slow(interaction: discord.Interaction, text: str = "late words") -> None:
        await interaction.response.defer()
        await outcomes.gate("slow").wait()
        message = await attempt(interaction, interaction.edit_original_response(content=text))
        outcomes.record(interaction, message)

    @bot.tree.command(description="Edit one message many times, as fast as possible")
    async def spam(interaction: discord.Interaction, edits: int) -> None:
        await interaction.response.defer()
        for i in range(1, edits + 1):
            await interaction.edit_original_response(content=f"edit {i}")
        outcomes.record(interaction, edits)

    @bot.tree.command(description="Acknowledge nothing (the test answers by hand)")
    async def noop(interaction: discord.Interaction) -> None:
        outcomes.record(interaction, None)

    @bot.tree.command(description="Only for moderators")
    @app_commands.default_permissions(manage_guild=True)
    async def admin(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok", ephemeral=True)

    @bot.tree.command(description="Upload a file to the channel and as a follow-up")
    async def upload(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="map below")
        assert isinstance(interaction.channel, discord.abc.Messageable)
        sent = await attempt(interaction, interaction.channel.send(
            "the map", file=discord.File(io.BytesIO(b"#" * 321), filename="map.txt")))
        followup = await interaction.followup.send(
            "notes", file=discord.File(io.BytesIO(b"n" * 12), filename="notes.txt"), wait=True)
        outcomes.record(interaction, (sent.attachments[0].size, followup.attachments[0].filename))

    @bot.tree.command(description="A door with a button")
    async def door(interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=30)
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(label="Open", custom_id="door:open")

        async def opened(press: discord.Interaction) -> None:
            await press.response.edit_message(content="The door creaks open.", view=None)
            outcomes.record(press, "opened")

        button.callback = opened  # type: ignore[method-assign]
        view.add_item(button)
        await interaction.response.send_message("A heavy door.", view=view)
        outcomes.record(interaction, "shown")

    campaign = app_commands.Group(name="campaign", description="Campaigns")

    @campaign.command(name="start", description="Start a campaign")
    async def campaign_start(interaction: discord.Interaction, name: str, rival: discord.Member) -> None:
        await interaction.response.send_message(f"{name} begins; rival {rival.display_name}")
        outcomes.record(interaction, (name, rival.id, type(rival).__name__))

    bot.tree.add_command(campaign)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if interaction.id not in outcomes.results:
            outcomes.record(interaction, original)

    return bot


@dataclass
class Harness:
    standin: DiscordStandIn
    bot: commands.Bot
    outcomes: Outcomes
    task: asyncio.Task[None]


async def shut_down(harness: Any) -> None:
    """Close a harness's bot and stand-in; the stand-in must not have failed on anything it was sent."""
    await harness.bot.close()
    try:
        await asyncio.wait_for(harness.task, timeout=5)
    except Exception:
        harness.task.cancel()
    await harness.standin.stop()
    assert not harness.standin.server_errors, harness.standin.server_errors[0]


@pytest.fixture
def point_discord_py() -> Any:
    """Point discord.py at a stand-in for the test, and restore Discord's URLs afterwards."""
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY

    def point(standin: DiscordStandIn) -> None:
        discord.http.Route.BASE = standin.api_base_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)

    yield point
    discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


@pytest.fixture
async def make_harness(point_discord_py: Callable[[DiscordStandIn], None]) -> AsyncIterator[Callable[..., Any]]:
    """``await make_harness(**standin_options)``: a started stand-in, a bot logged in, ready and synced."""
    made: list[Harness] = []

    async def make(*, sync: bool = True, **options: Any) -> Harness:
        options.setdefault("guilds", [guild_spec()])
        # Roomy interaction buckets unless a test is about rate limits: with Discord's 5 per 2 s, discord.py
        # holds a token's lock for the whole Reset-After once Remaining hits 0, which only slows tests down.
        options.setdefault("limits", Limits(interaction=(50, 1.0)))
        standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                       **options).start()
        point_discord_py(standin)
        outcomes = Outcomes()
        bot = build_bot(outcomes)
        task = asyncio.create_task(bot.start(TOKEN))
        harness = Harness(standin, bot, outcomes, task)
        made.append(harness)
        await standin.wait_ready(timeout=10)
        async with asyncio.timeout(10):
            await bot.wait_until_ready()
        if sync:
            await bot.tree.sync()
        return harness

    yield make
    for harness in made:
        await shut_down(harness)


# -- the product's own bot against the stand-in ------------------------------------------------------------


@dataclass
class DMHarness:
    """The real DungeonMasterBot (cogs, DMService, SQLite file) logged in to a stand-in, with a scripted LLM."""

    standin: DiscordStandIn
    bot: Any
    provider: Any
    task: asyncio.Task[None]
    finished: dict[int, asyncio.Event] = field(default_factory=dict)

    async def run(self, name: str, options: dict[str, Any] | None = None, *, user: int = PLAYER,
                  channel: int = GENERAL, permissions: int | None = None, timeout: float = 10.0) -> Any:
        """Invoke a slash command as a user would and wait until its callback has returned."""
        extra = {} if permissions is None else {"member_permissions": permissions}
        inter = await self.standin.invoke(name, options or {}, channel_id=channel, user_id=user, **extra)
        event = self.finished.setdefault(inter.id, asyncio.Event())
        async with asyncio.timeout(timeout):
            await event.wait()
        return inter

    def visible(self, inter: Any) -> list[Any]:
        """The messages this interaction left that its user can see, in order."""
        return [m for m in self.standin.messages(inter.channel_id, viewer_id=inter.user_id)
                if m.interaction_id == inter.id or m.id in inter.followup_ids or m.id == inter.original_id]


@pytest.fixture
async def make_dm_bot(point_discord_py: Callable[[DiscordStandIn], None], tmp_path: Any):
    """``await make_dm_bot(provider, **config_sections)``: stand-in + DungeonMasterBot, ready, commands synced."""
    import dataclasses

    from bot.client import make_bot
    from bot.config import Config

    made: list[DMHarness] = []

    async def make(provider: Any, *, standin: DiscordStandIn | None = None, database: str | None = None,
                   **sections: dict[str, Any]) -> DMHarness:
        if standin is None:
            standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                           guilds=[guild_spec()], limits=Limits(interaction=(50, 1.0))).start()
        point_discord_py(standin)
        config = Config()
        discord_section = {"api_base_url": standin.api_base_url, "gateway_url": standin.gateway_url,
                           "edit_interval_seconds": 0.05, **sections.pop("discord", {})}
        changes = {name: dataclasses.replace(getattr(config, name), **values)
                   for name, values in {"discord": discord_section, **sections}.items()}
        changes["database"] = dataclasses.replace(config.database,
                                                  url=f"sqlite:///{database or tmp_path / 'dm.db'}")
        config = dataclasses.replace(config, **changes)
        bot = make_bot(config, provider=provider, guild_ready_timeout=0.05)  # sharded with discord={"shard_count"…}
        harness = DMHarness(standin, bot, provider, asyncio.create_task(bot.start(TOKEN)))

        @bot.listen("on_app_command_completion")
        async def completed(interaction: discord.Interaction, command: Any) -> None:
            harness.finished.setdefault(interaction.id, asyncio.Event()).set()

        original_on_error = bot.tree.on_error

        async def on_error(interaction: discord.Interaction, error: Any) -> None:
            await original_on_error(interaction, error)
            harness.finished.setdefault(interaction.id, asyncio.Event()).set()

        bot.tree.on_error = on_error
        made.append(harness)
        async with asyncio.timeout(10):
            while not bot.is_ready():  # the stand-in may be ready from an earlier client already
                if harness.task.done():
                    harness.task.result()  # the bot failed to start: show why
                await asyncio.sleep(0.01)
        return harness

    yield make
    for harness in made:
        await shut_down(harness)
