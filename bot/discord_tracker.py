"""The combat tracker: while a combat runs, one message per channel shows the round, the initiative order, HP,
conditions and whose turn it is, edited in place on every change until the combat ends.

Pacing, retries and the 2000-character limit are the MessageStreamer's (one owner): each tracker is a
streamer over a ``ChannelMessageSink``, whose "original message" is a plain channel message posted on the first
edit. A change replaces the streamer's whole text (``reset`` + ``feed``), so a burst of changes costs one edit
per interval, showing the latest state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

from bot.discord_sink import SentMessage, _mapped
from bot.discord_stream import MessageStreamer
from bot.dm.rules.render import tracker_final, tracker_text
from bot.dm.rules.state import Party
from bot.message_sink import Clock

log = logging.getLogger(__name__)
_NO_PINGS = discord.AllowedMentions.none()


class ChannelMessageSink:
    """A MessageSink over a message of the bot's own in a channel (bot token: no 15-minute limit)."""

    def __init__(self, channel: discord.abc.Messageable) -> None:
        self.channel = channel
        self.message: discord.Message | None = None

    async def edit_original(self, content: str) -> None:
        if self.message is None:
            self.message = await _mapped(self.channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
        else:
            await _mapped(self.message.edit(content=content, allowed_mentions=_NO_PINGS), webhook=False)

    async def send_followup(self, content: str) -> SentMessage:
        return await self.send_channel(content)

    async def send_channel(self, content: str) -> SentMessage:
        message = await _mapped(self.channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
        return SentMessage(message, via_webhook=False)

    async def edit(self, ref: SentMessage, content: str) -> None:
        await _mapped(ref.message.edit(content=content, allowed_mentions=_NO_PINGS), webhook=False)

    async def delete(self, ref: SentMessage | None) -> None:
        target = self.message if ref is None else ref.message
        if target is not None:
            await _mapped(target.delete(), webhook=False)

    async def send_ephemeral(self, content: str) -> None:  # no interaction to whisper through
        log.warning("combat tracker: %s", content)


class CombatTrackers:
    """The live tracker of each channel with a combat running."""

    def __init__(self, edit_interval: float, clock: Clock | None = None) -> None:
        self.edit_interval = edit_interval
        self.clock = clock
        self._live: dict[int, MessageStreamer] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    def update(self, channel: Any, party: Party, line: str) -> None:
        """Show the state after a change. When the combat has ended, the tracker shows its last line and is let go."""
        if channel is None or not hasattr(channel, "send"):
            return
        streamer = self._live.get(channel.id)
        if party.combat is None:
            if streamer is None:
                return
            del self._live[channel.id]
            streamer.reset()
            streamer.feed(tracker_final(line))
            task = asyncio.get_running_loop().create_task(streamer.finish())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        if streamer is None:
            streamer = MessageStreamer(ChannelMessageSink(channel), edit_interval=self.edit_interval,
                                       clock=self.clock, cursor="")
            self._live[channel.id] = streamer
        streamer.reset()
        streamer.feed(tracker_text(party))

    def streamer(self, channel_id: int) -> MessageStreamer | None:
        return self._live.get(channel_id)

    async def close(self) -> None:
        """Final edits of every tracker (the bot is stopping): they keep the last state they showed."""
        streamers, self._live = list(self._live.values()), {}
        await asyncio.gather(*(s.finish() for s in streamers), *self._closing, return_exceptions=True)
