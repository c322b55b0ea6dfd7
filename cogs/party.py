"""/character, /party and /combat: a player's own sheet, the party, and the combat tracker."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer, refuse
from bot.dm.rules.render import sheet
from bot.dm.rules.text import RuleError
from cogs.common import channel_of, player_of


class Party(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="character", description="Create or update your character in this adventure.")
    @app_commands.describe(
        name="Your character's name, e.g. 'Thessaly'",
        role="Class, job or role, e.g. 'half-elf rogue' (optional)",
        description="A few words the DM should know, e.g. 'quick, curious, afraid of deep water' (optional)",
        max_hp="Hit point maximum, 1 to 999; leave out for story-only play without hit points",
        ac="Armour class, 1 to 40",
        initiative_bonus="Added to your initiative rolls, -10 to 20",
    )
    @app_commands.guild_only()
    async def character(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                        role: app_commands.Range[str, None, 60] | None = None,
                        description: app_commands.Range[str, None, 300] | None = None,
                        max_hp: app_commands.Range[int, 1, 999] | None = None,
                        ac: app_commands.Range[int, 1, 40] | None = None,
                        initiative_bonus: app_commands.Range[int, -10, 20] | None = None) -> None:
        await interaction.response.defer(thinking=True)
        try:
            made = await self.bot.dm.party.character(
                channel_of(interaction), player_of(interaction), name=name, role=role, description=description,
                max_hp=max_hp, ac=ac, initiative_bonus=initiative_bonus)
        except RuleError as error:
            await refuse(interaction, str(error))
            return
        await answer(interaction, f"📜 Character sheet\n{sheet(made)}")
        party = await self.bot.dm.party.view(channel_of(interaction))
        if party.combat is not None:  # a new name, AC or maximum shows on the tracker too
            await self.bot.trackers.update(interaction.channel, party, "")

    @app_commands.command(name="party", description="Show every character: player, role, HP, AC, conditions.")
    @app_commands.guild_only()
    async def party(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        try:
            await answer(interaction, await self.bot.dm.party.party_text(channel_of(interaction)))
        except RuleError as error:
            await answer(interaction, str(error))

    @app_commands.command(name="combat", description="Show the combat: round, initiative order, HP, whose turn.")
    @app_commands.guild_only()
    async def combat(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        try:
            await answer(interaction, await self.bot.dm.party.combat_text(channel_of(interaction)))
        except RuleError as error:
            await answer(interaction, str(error))


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Party(bot))
