"""What every cog needs to turn an interaction into DMService arguments."""

from __future__ import annotations

import discord

from bot.store.base import Channel, Player


def channel_of(interaction: discord.Interaction) -> Channel:
    guild = str(interaction.guild_id) if interaction.guild_id else None
    return Channel(guild, str(interaction.channel_id))


def player_of(interaction: discord.Interaction) -> Player:
    user = interaction.user
    return Player(str(user.id), user.display_name)
