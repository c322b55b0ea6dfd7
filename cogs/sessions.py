"""/start, /end and /session: open, close and look at the channel's adventure."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer, play_turn, refuse, stream_turn
from bot.store.base import Channel
from cogs.common import channel_of, player_of

log = logging.getLogger(__name__)

PREMISE_SHOWN = 300  # characters of the premise /session shows


class Sessions(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="start", description="Start an adventure in this channel; the DM opens the scene.")
    @app_commands.describe(
        premise="What the adventure is about, e.g. 'a heist in a floating city' (optional)",
        thread="Open a public thread for the adventure, named after the premise, and play it there",
    )
    @app_commands.guild_only()
    async def start(self, interaction: discord.Interaction, premise: app_commands.Range[str, None, 4000] = "",
                    thread: bool = False) -> None:
        pace = self.bot.config.discord
        if not thread or isinstance(interaction.channel, discord.Thread):  # inside a thread: play right there
            await play_turn(interaction,
                            lambda: self.bot.dm.start(channel_of(interaction), player_of(interaction), premise),
                            edit_interval=pace.edit_interval_seconds, min_edit_interval=pace.min_edit_interval_seconds)
            return
        await interaction.response.defer(thinking=True)  # the thread must exist before the DM's turn starts
        into = await open_thread(interaction, premise)
        if into is None:
            return
        await answer(interaction, f"🧵 A new adventure begins in {into.mention}: play there with /act.")
        events = self.bot.dm.start(Channel(channel_of(interaction).guild_id, str(into.id)), player_of(interaction),
                                   premise)
        await stream_turn(interaction, events, edit_interval=pace.edit_interval_seconds,
                          min_edit_interval=pace.min_edit_interval_seconds, into=into)

    @app_commands.command(name="end", description="End this channel's adventure (its starter or a channel manager).")
    @app_commands.guild_only()
    async def end(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        ended, message = await self.bot.dm.end(channel_of(interaction), player_of(interaction),
                                               can_manage=interaction.permissions.manage_channels)
        await (answer if ended else refuse)(interaction, message)

    @app_commands.command(name="session", description="Show this channel's adventure: who started it, turns, budget.")
    @app_commands.guild_only()
    async def session(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        view = await self.bot.dm.usage(channel_of(interaction))
        if view is None:
            await answer(interaction, "There is no adventure running in this channel. Start one with /start.")
            return
        s = view.session
        # One line, and short: escaping can double a premise's length, and the answer must fit in 2000.
        premise = " ".join(s.premise.split())
        premise = premise if len(premise) <= PREMISE_SHOWN else premise[:PREMISE_SHOWN - 1].rstrip() + "…"
        premise = discord.utils.escape_markdown(premise) if premise else "*a surprise*"
        await answer(interaction, (
            f"**Adventure in this channel**\n"
            f"Premise: {premise}\n"
            f"Started by {discord.utils.escape_markdown(s.started_by.name)} <t:{int(s.created_at)}:R>\n"
            f"Turns played: {view.turns}\n"
            f"Budget: {view.used:,} of {view.limit:,} tokens used ({view.remaining:,} left)"))


async def open_thread(interaction: discord.Interaction, premise: str) -> discord.Thread | None:
    """A public thread from the interaction's channel, named after the premise; None (the user was told) if not."""
    channel = interaction.channel
    if not isinstance(channel, discord.TextChannel):
        await refuse(interaction, "An adventure thread can only be opened from a text channel. Use /start "
                                  "without thread here.")
        return None
    try:
        return await channel.create_thread(name=thread_name(premise), type=discord.ChannelType.public_thread,
                                           auto_archive_duration=1440, reason="A new adventure (/start thread)")
    except discord.Forbidden:
        await refuse(interaction, "I can't open a thread here: I need the **Create Public Threads** and **Send "
                                  "Messages in Threads** permissions in this channel. Ask an admin, or use /start "
                                  "without thread.")
    except discord.HTTPException as error:
        log.warning("could not open a thread in channel %s: %s", channel.id, error)
        await refuse(interaction, "Discord would not open the thread just now. Try again in a moment.")
    return None


def thread_name(premise: str) -> str:
    """Discord's thread names: 1 to 100 characters, one line."""
    name = " ".join(premise.split()) or "A new adventure"
    return name if len(name) <= 100 else name[:99].rstrip() + "…"


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Sessions(bot))
