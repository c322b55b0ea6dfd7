"""The Discord side of a DM turn, shared by the cogs: DM events → MessageStreamer calls, and short answers.

Every command defers (Discord wants an answer within 3 s); what follows either fills the deferred message or,
for a refusal, removes the public "thinking…" and answers privately. A DM turn (``play_turn``) does not wait
for the deferral's round trip: the turn (guards, store reads, the LLM request) starts beside it, and the
streamer's first call waits for it (bench/: that round trip stood before every LLM request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from contextlib import aclosing

import discord

from bot.discord_sink import ChannelSink, InteractionSink, token_deadline
from bot.discord_stream import MessageStreamer
from bot.message_sink import MonotonicClock
from bot.dm.events import (
    AnswersBatch,
    BatchTicket,
    Batched,
    DMEvent,
    Done,
    Failed,
    Reset,
    Retrying,
    RollMade,
    TextDelta,
    UsageReport,
)

log = logging.getLogger(__name__)
NO_PINGS = discord.AllowedMentions.none()
SILENT = "*The DM pauses, lost in thought. Try again?*"
STOPPING = "the bot is restarting. Send your action again in a minute."


async def play_turn(interaction: discord.Interaction, events: Callable[[], AsyncIterator[DMEvent]], *,
                    edit_interval: float, min_edit_interval: float = 0.25) -> MessageStreamer:
    """Defer (public "thinking…") and run the DM turn ``events()`` side by side, then show it as it streams."""
    ack = asyncio.ensure_future(interaction.response.defer(thinking=True))
    ack.add_done_callback(_seen)
    try:
        return await stream_turn(interaction, events(), edit_interval=edit_interval,
                                 min_edit_interval=min_edit_interval, acknowledged=ack)
    finally:
        if not ack.done():  # the command is answered before its handler returns
            await asyncio.wait([ack])


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:  # the sink raised it where it mattered
        log.warning("deferring the interaction failed: %r", task.exception())


async def stream_turn(interaction: discord.Interaction, events: AsyncIterator[DMEvent], *,
                      edit_interval: float, min_edit_interval: float = 0.25,
                      acknowledged: asyncio.Future[Any] | None = None,
                      into: discord.Thread | None = None) -> MessageStreamer:
    """Show a DM turn as it streams. The interaction must be deferred with ``thinking=True``: already, or by
    the ``acknowledged`` task (which the streamer's first call waits for). ``into``: stream into that thread (a
    new adventure's) instead of the interaction's response."""
    clock = MonotonicClock()
    sink = (InteractionSink(interaction, acknowledged=acknowledged) if into is None
            else ChannelSink(interaction, into))
    streamer = MessageStreamer(sink, edit_interval=edit_interval, min_edit_interval=min_edit_interval, clock=clock,
                               pacer=getattr(interaction.client, "ratelimits", None),
                               token_expires_at=token_deadline(interaction, clock) if into is None else None,
                               blocked_note=blocked_note(interaction))
    in_flight = getattr(interaction.client, "turns_in_flight", None)  # DungeonMasterBot.close() stops these
    metrics = getattr(interaction.client, "metrics", None)  # bot/metrics.py: turns, retries, latency
    if metrics is not None:
        events = metrics.observe_turn(events)
    task = asyncio.current_task()
    if in_flight is not None and task is not None:
        in_flight.add(task)
    ending: DMEvent | None = None
    joined: BatchTicket | None = None  # this action joined another's batch: that response shows the answer
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    streamer.feed(event.text)
                elif isinstance(event, Reset):
                    streamer.reset()
                elif isinstance(event, Retrying):
                    streamer.status(retry_note(event))
                elif isinstance(event, RollMade):
                    gap = "\n\n" if streamer.text.strip() else ""
                    streamer.feed(f"{gap}{event.roll.markdown(event.for_whom)}\n\n")
                    streamer.checkpoint()  # a roll stays, whatever a later retry does
                elif isinstance(event, Batched):
                    joined = event.ticket if event.position > 1 else joined
                    show_batched(streamer, event)
                elif isinstance(event, AnswersBatch):
                    event.ticket.shown_at = await jump_url(interaction)  # the others' responses point here
                elif isinstance(event, UsageReport) and hasattr(streamer, "settle"):
                    # The model's stream ended: its last words show now, not after the turn is stored.
                    streamer.settle()
                elif isinstance(event, Done | Failed):
                    ending = event
                    break
        # The DM's turn is over and its channel free for the next action before the last edits (which the
        # streamer sends at once when the bucket has room; settle() has usually shown the last words already).
        if isinstance(ending, Failed):
            await streamer.fail(ending.message)
        else:
            if joined is not None:
                where = joined.shown_at or "the DM's answer above"
                streamer.feed(f"\n-# ↪ The DM answers it together with the others' actions: {where}")
            if not streamer.text.strip():
                streamer.feed(SILENT)
            await streamer.finish()
    except asyncio.CancelledError:
        # The bot is stopping. A finished answer still gets its last edits (the service stored it); a cut one
        # was stored as interrupted and its message ends with the note. Either way no cursor is left behind.
        if isinstance(ending, Done):
            await streamer.finish()
        else:
            await streamer.fail(STOPPING)
        raise
    except Exception:
        log.exception("streaming a DM turn failed")
        await streamer.fail("something went wrong on our side; it has been logged")
    finally:
        if in_flight is not None:
            in_flight.discard(task)
    if streamer.blocked_reason and streamer.blocked_reason.startswith("missing access"):
        log.warning("cannot post in channel %s of server %s: the bot needs the %s permission(s) there (%s); %s",
                    interaction.channel_id, interaction.guild_id, " and ".join(missing_permissions(interaction)),
                    streamer.blocked_reason, "the user was told privately" if streamer.blocked_told
                    else "the user could not be told (the interaction token had expired)")
    elif streamer.blocked_reason:
        log.warning("channel %s: %s", interaction.channel_id, streamer.blocked_reason)
    return streamer


def show_batched(streamer: MessageStreamer, event: Batched) -> None:
    """An action that will be answered with the next turn: said at once. The first action of a batch gets a
    note where the answer will stream; the others show the action itself, then point to the answer."""
    if event.position == 1:
        streamer.status("📝 Your action is in: the DM answers it right after the current answer.")
        return
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(" ".join(event.text.split())))
    streamer.feed(f"📝 {text[:1500]}")
    streamer.checkpoint()
    streamer.status("the DM answers it together with the others' right after the current answer…")


async def jump_url(interaction: discord.Interaction) -> str | None:
    """A link to the interaction's response message (None if Discord would not say)."""
    try:
        return (await interaction.original_response()).jump_url
    except discord.HTTPException as error:
        log.info("could not read the response message's link: %s", error)
        return None


def retry_note(event: Retrying) -> str:
    return f"⏳ {event.reason}; trying again ({event.attempt}/{event.attempts})…"


def missing_permissions(interaction: discord.Interaction) -> list[str]:
    """What the bot lacks to post in the interaction's channel (per the permissions Discord sent with it), or
    both candidates when those said it could: they were taken away since."""
    thread = isinstance(interaction.channel, discord.Thread)
    send = "Send Messages in Threads" if thread else "Send Messages"
    granted = interaction.app_permissions
    missing = [name for name, ok in (("View Channel", granted.view_channel),
                                     (send, granted.send_messages_in_threads if thread else granted.send_messages))
               if not ok]
    return missing or ["View Channel", send]


def blocked_note(interaction: discord.Interaction) -> str:
    """The private note for a user whose answer the channel refused (shown while the token still works)."""
    return (f"⚠️ I could not post the rest of the DM's answer in <#{interaction.channel_id}>: I don't have the "
            f"{' and '.join(f'**{p}**' for p in missing_permissions(interaction))} permission there. "
            "A server admin, or anyone who can manage this channel, can allow it in the channel's permission "
            "settings; then play on with /act.")


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
