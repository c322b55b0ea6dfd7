"""/budget: a server admin sets this channel's adventure budget."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer
from cogs.common import channel_of


class Admin(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="budget", description="Set this channel's adventure token budget (Manage Server).")
    @app_commands.describe(tokens="Tokens this adventure may use in all, e.g. 200000 (1,000 to 100,000,000)")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def budget(self, interaction: discord.Interaction,
                     tokens: app_commands.Range[int, 1_000, 100_000_000]) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        # default_permissions only hides the command; the service checks the permission itself.
        _, message = await self.bot.dm.set_budget(channel_of(interaction), tokens,
                                                   can_manage_server=interaction.permissions.manage_guild)
        await answer(interaction, message)  # private either way: the deferral was ephemeral


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Admin(bot))
