"""/act: a player's action; the DM's answer streams in."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import play_turn
from cogs.common import channel_of, player_of


class Actions(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="act", description="Tell the DM what your character does or says.")
    @app_commands.describe(action="What you do, e.g. 'I search the desk for a hidden drawer'")
    @app_commands.guild_only()
    async def act(self, interaction: discord.Interaction, action: app_commands.Range[str, 1, 4000]) -> None:
        pace = self.bot.config.discord
        await play_turn(interaction, lambda: self.bot.dm.act(channel_of(interaction), player_of(interaction), action),
                        edit_interval=pace.edit_interval_seconds, min_edit_interval=pace.min_edit_interval_seconds)


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Actions(bot))
