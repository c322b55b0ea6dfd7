"""/config and /usage: a server admin's settings and this month's spending (Manage Server, private)."""

from __future__ import annotations

import io
import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import NO_PINGS, answer, refuse
from bot.dm.admin import ServerUsage
from bot.store.admin_queries import SpendLine
from bot.usage_chart import daily_tokens_png
from cogs.common import player_of

log = logging.getLogger(__name__)


def _cost(line: SpendLine) -> str:
    if line.calls == 0:
        return "$0.00"
    return f"about ${line.cost_usd:.2f}" + ("" if line.cost_complete else " + calls with no known price")


def _name(text: str) -> str:
    return discord.utils.escape_markdown(" ".join(text.split())[:40]) or "someone"


def usage_text(report: ServerUsage) -> str:
    """The /usage message (well under Discord's 2000 characters: 10 + 10 short lines)."""
    month, total, settings = report.month, report.total, report.settings
    cap = ("no monthly cap" if settings.monthly_budget == 0
           else f"{total.tokens / settings.monthly_budget:.0%} of the monthly cap of {settings.monthly_budget:,}")
    lines = [f"**Usage in {month.label}** (UTC, since <t:{int(month.start)}:D>)",
             f"Total: **{total.tokens:,} tokens** · {_cost(total)} · {total.calls} model calls · {cap}"]
    if report.by_channel:
        lines.append("**By channel**")
        lines += [f"{i}. <#{c.key}> — {c.tokens:,} tokens · {_cost(c)}" for i, c in enumerate(report.by_channel, 1)]
    if report.by_player:
        lines.append("**By player**")
        lines += [f"{i}. {_name(p.name)} (<@{p.key}>) — {p.tokens:,} tokens · {_cost(p)}"
                  for i, p in enumerate(report.by_player, 1)]
    if not total.calls:
        lines.append("Nothing was spent this month yet.")
    return "\n".join(lines)


class Server(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="config", description="Show or change this server's DM settings (Manage Server).")
    @app_commands.describe(
        persona="Who the DM is, completing 'You are …' (plain words, at most 500 characters)",
        content_rating="How mature the story may get: family, teen or mature",
        adventure_budget="Tokens each new adventure may use (1,000 to 100,000,000)",
        monthly_budget="Tokens the whole server may use per calendar month (UTC); 0 = no cap",
        player_daily_budget="Tokens one player's actions may cost per day (UTC); 0 = no cap",
    )
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def config(
        self, interaction: discord.Interaction,
        persona: app_commands.Range[str, 1, 500] | None = None,
        content_rating: Literal["family", "teen", "mature"] | None = None,
        adventure_budget: app_commands.Range[int, 1_000, 100_000_000] | None = None,
        monthly_budget: app_commands.Range[int, 0, 10_000_000_000] | None = None,
        player_daily_budget: app_commands.Range[int, 0, 10_000_000_000] | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        guild = str(interaction.guild_id) if interaction.guild_id else None
        changes = {"persona": persona, "content_rating": content_rating, "adventure_budget": adventure_budget,
                   "monthly_budget": monthly_budget, "player_daily_budget": player_daily_budget}
        # default_permissions only hides the command; the service checks the permission itself.
        _, message = await self.bot.dm.admin.configure(guild, player_of(interaction), changes,
                                                       can_manage_server=interaction.permissions.manage_guild)
        await answer(interaction, message)

    @app_commands.command(name="usage", description="This month's tokens and cost in this server (Manage Server).")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def usage(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        guild = str(interaction.guild_id) if interaction.guild_id else None
        report = await self.bot.dm.admin.usage(guild, can_manage_server=interaction.permissions.manage_guild)
        if isinstance(report, str):
            await refuse(interaction, report)
            return
        title = f"Tokens per day, {report.month.label} (UTC)"
        chart = discord.File(io.BytesIO(daily_tokens_png(report.daily, title)), filename="usage.png",
                             description=f"Bar chart of tokens used per day in {report.month.label}")
        try:
            await interaction.edit_original_response(content=usage_text(report), attachments=[chart],
                                                     allowed_mentions=NO_PINGS)
        except discord.HTTPException as error:
            log.warning("could not answer /usage: %s", error)


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Server(bot))
