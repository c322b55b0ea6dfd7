"""The Discord side of a DM turn, shared by the cogs: DM events → MessageStreamer calls, and short answers.

Every command defers first (Discord wants an answer within 3 s); what follows either fills the deferred
message or, for a refusal, removes the public "thinking…" and answers privately.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import discord

from bot.discord_sink import InteractionSink, token_deadline
from bot.discord_stream import MessageStreamer
from bot.message_sink import MonotonicClock
from bot.dm.events import DMEvent, Done, Failed, Reset, RollMade, TextDelta

log = logging.getLogger(__name__)
NO_PINGS = discord.AllowedMentions.none()
SILENT = "*The DM pauses, lost in thought. Try again?*"


async def stream_turn(interaction: discord.Interaction, events: AsyncIterator[DMEvent], *,
                      edit_interval: float) -> MessageStreamer:
    """Show a DM turn as it streams. The interaction must already be deferred with ``thinking=True``."""
    clock = MonotonicClock()
    streamer = MessageStreamer(InteractionSink(interaction), edit_interval=edit_interval, clock=clock,
                               token_expires_at=token_deadline(interaction, clock))
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                streamer.feed(event.text)
            elif isinstance(event, Reset):
                streamer.reset()
            elif isinstance(event, RollMade):
                gap = "\n\n" if streamer.text.strip() else ""
                streamer.feed(f"{gap}{event.roll.markdown(event.for_whom)}\n\n")
                streamer.checkpoint()  # a roll stays, whatever a later retry does
            elif isinstance(event, Done):
                if not streamer.text.strip():
                    streamer.feed(SILENT)
                await streamer.finish()
            elif isinstance(event, Failed):
                await streamer.fail(event.message)
    except Exception:
        log.exception("streaming a DM turn failed")
        await streamer.fail("something went wrong on our side; it has been logged")
    if streamer.blocked_reason:
        log.warning("channel %s: %s", interaction.channel_id, streamer.blocked_reason)
    return streamer


async def refuse(interaction: discord.Interaction, message: str) -> None:
    """A short private answer. If a public "thinking…" was shown, it is removed first."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        await interaction.delete_original_response()  # the deferred "thinking…", public or private
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=NO_PINGS)
    except discord.HTTPException as error:
        log.warning("could not tell the user %r: %s", message, error)


async def answer(interaction: discord.Interaction, content: str) -> None:
    """Fill the deferred response with ``content``."""
    try:
        await interaction.edit_original_response(content=content, allowed_mentions=NO_PINGS)
    except discord.HTTPException as error:
        log.warning("could not answer /%s: %s", interaction.command.name if interaction.command else "?", error)
