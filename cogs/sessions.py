"""/start, /end and /session: open, close and look at the channel's adventure."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer, play_turn, refuse
from cogs.common import channel_of, player_of

PREMISE_SHOWN = 300  # characters of the premise /session shows


class Sessions(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="start", description="Start an adventure in this channel; the DM opens the scene.")
    @app_commands.describe(premise="What the adventure is about, e.g. 'a heist in a floating city' (optional)")
    @app_commands.guild_only()
    async def start(self, interaction: discord.Interaction, premise: app_commands.Range[str, None, 4000] = "") -> None:
        pace = self.bot.config.discord
        await play_turn(interaction, lambda: self.bot.dm.start(channel_of(interaction), player_of(interaction), premise),
                        edit_interval=pace.edit_interval_seconds, min_edit_interval=pace.min_edit_interval_seconds)

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


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Sessions(bot))
