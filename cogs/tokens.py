"""/tokens: what this channel's adventure has used of its budget, privately."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import answer
from cogs.common import channel_of


class Tokens(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="tokens", description="Show this adventure's token budget: used, limit, left, cost.")
    @app_commands.guild_only()
    async def tokens(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        view = await self.bot.dm.usage(channel_of(interaction))
        if view is None:
            await answer(interaction, "There is no adventure running in this channel, so nothing is being spent.")
            return
        usage = view.totals.usage
        if view.totals.calls == 0:
            cost = "$0.00"
        elif view.totals.cost_complete:
            cost = f"about ${view.totals.cost_usd:.4f}"
        else:
            cost = f"about ${view.totals.cost_usd:.4f} plus calls to a model with no known price"
        await answer(interaction, (
            f"**Tokens for this adventure**: {view.used:,} used of {view.limit:,} — **{view.remaining:,} left**\n"
            f"Input {usage.input_tokens:,} · cached input {usage.cache_read_tokens + usage.cache_write_tokens:,} "
            f"· output {usage.output_tokens:,} over {view.totals.calls} model calls"
            f"{estimated_note(view.totals.estimated_tokens)}\n"
            f"Estimated cost: {cost}"))


def estimated_note(tokens: int) -> str:
    """Said when some calls' usage was never reported by the model server and the bot's estimate was charged."""
    return (f" (about {tokens:,} of them estimated: the model server did not report their usage)"
            if tokens else "")


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Tokens(bot))
