"""/recap, /remember and /forget: the adventure's memory (bot/dm/memory decides everything; this only talks)."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import DungeonMasterBot
from bot.discord_turn import NO_PINGS, answer, refuse
from bot.dm.memory import MAX_PIN_CHARS, MAX_PINS, recap_text
from bot.message_text import split_text
from cogs.common import channel_of, player_of

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 2000  # Discord's limit on a message's content
RECAP_MESSAGES = 4  # a longer recap is trimmed, with a note


class Memory(commands.Cog):
    def __init__(self, bot: DungeonMasterBot) -> None:
        self.bot = bot

    @app_commands.command(name="recap", description="The story so far: summary, pinned facts and the last turns.")
    @app_commands.describe(public="Show the recap to the whole channel (default: only you see it)")
    @app_commands.guild_only()
    async def recap(self, interaction: discord.Interaction, public: bool = False) -> None:
        await interaction.response.defer(thinking=True, ephemeral=not public)
        recap = await self.bot.dm.memory.recap(channel_of(interaction))
        if recap is None:
            await refuse(interaction, "There is no adventure running in this channel. Start one with /start.")
            return
        text = recap_text(recap, escape=discord.utils.escape_markdown)
        parts = split_text(text, MESSAGE_LIMIT, max_parts=RECAP_MESSAGES,
                           note="\n*(trimmed: the recap is longer than Discord shows at once)*")
        await answer(interaction, parts[0])
        for part in parts[1:]:
            try:
                await interaction.followup.send(part, ephemeral=not public, allowed_mentions=NO_PINGS)
            except discord.HTTPException as error:
                log.warning("could not send the rest of /recap: %s", error)
                return

    @app_commands.command(name="remember", description="Pin a fact the DM always keeps in mind (up to 25).")
    @app_commands.describe(fact=f"The fact, in at most {MAX_PIN_CHARS} characters, e.g. 'Oswin the innkeeper "
                                "owes us 10 gold'")
    @app_commands.guild_only()
    async def remember(self, interaction: discord.Interaction, fact: app_commands.Range[str, 1, 2000]) -> None:
        await interaction.response.defer(thinking=True)
        pinned, message = await self.bot.dm.memory.remember(channel_of(interaction), player_of(interaction), fact)
        if not pinned:
            await refuse(interaction, message)
            return
        shown = discord.utils.escape_markdown(" ".join(fact.split()))
        await answer(interaction, f"{message}\n> {shown}")

    @app_commands.command(name="forget", description="Remove a pinned fact (its author, the starter or a manager).")
    @app_commands.describe(number=f"The fact's number, as /recap shows it (1 to {MAX_PINS} pins are kept)")
    @app_commands.guild_only()
    async def forget(self, interaction: discord.Interaction,
                     number: app_commands.Range[int, 1, 1_000_000]) -> None:
        await interaction.response.defer(thinking=True)
        removed, message = await self.bot.dm.memory.forget(
            channel_of(interaction), player_of(interaction), number,
            can_manage=interaction.permissions.manage_channels)
        await (answer if removed else refuse)(interaction, message)


async def setup(bot: DungeonMasterBot) -> None:
    await bot.add_cog(Memory(bot))
