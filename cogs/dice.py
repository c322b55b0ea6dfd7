"""/roll: real dice, in the open; inside an adventure the DM sees the result next turn."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer, refuse
from bot.dm.dice import DiceError
from bot.dm.service import RollRefused
from cogs.common import channel_of, player_of


class Dice(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="roll", description="Roll dice, e.g. 1d20+5, 4d6kh3, 2d6+3 [fire], 1d20 adv.")
    @app_commands.describe(
        dice="Dice notation: 1d20+5, 4d6kh3 (keep highest 3), 1d6rr1 (reroll 1s), 8d6 [fire], 1d20 adv",
        reason="What the roll is for, e.g. 'Stealth' (the DM sees it)",
        advantage="Roll the d20 twice and keep the higher (advantage) or the lower (disadvantage)",
    )
    @app_commands.choices(advantage=[
        app_commands.Choice(name="advantage", value="advantage"),
        app_commands.Choice(name="disadvantage", value="disadvantage"),
    ])
    async def roll(self, interaction: discord.Interaction, dice: app_commands.Range[str, 1, 200],
                   reason: app_commands.Range[str, None, 100] | None = None,
                   advantage: app_commands.Choice[str] | None = None) -> None:
        await interaction.response.defer(thinking=True)
        try:
            outcome = await self.bot.dm.roll(channel_of(interaction), player_of(interaction), dice,
                                             advantage=advantage.value if advantage else None, reason=reason)
        except (DiceError, RollRefused) as error:
            await refuse(interaction, str(error))
            return
        await answer(interaction, outcome.result.markdown(interaction.user.display_name))


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Dice(bot))
