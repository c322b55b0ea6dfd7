"""The combat tracker: while a combat runs, one message per channel shows the round, the initiative order, HP,
conditions and whose turn it is, edited in place on every change until the combat ends.

Pacing, retries and the 2000-character limit are the MessageStreamer's (one owner): each tracker is a
streamer over a ``ChannelMessageSink``, whose "original message" is a plain channel message posted on the first
edit. Its edits are paced by the channel's rate-limit bucket as Discord reports it (the book every narration
shares, bot/discord_pacing.py; ``edit_interval_seconds`` while nothing is known). A change replaces the
streamer's whole text (``reset`` + ``feed``), so a burst of changes costs one edit per step of that pace,
showing the latest state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.discord_pacing import RateLimitBook
from bot.discord_sink import SentMessage, _mapped
from bot.discord_stream import MessageStreamer
from bot.dm.rules.render import tracker_final, tracker_text
from bot.dm.rules.state import Party
from bot.message_sink import Clock

log = logging.getLogger(__name__)
_NO_PINGS = discord.AllowedMentions.none()


class ChannelMessageSink:
    """A MessageSink over a message of the bot's own in a channel (bot token: no 15-minute limit). ``message``:
    one posted before (a restart), edited rather than posting another; ``on_posted`` hears of a new one."""

    def __init__(self, channel: discord.abc.Messageable, message: Any = None,
                 on_posted: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.channel = channel
        self.message = message
        self.on_posted = on_posted

    def route(self, op: str, kind: str, ref: SentMessage | None) -> tuple[str, str]:
        """(method, path) of a call: the rate-limit bucket it falls in, the channel's (bot/discord_pacing.py)."""
        method = {"send": "POST", "edit": "PATCH", "delete": "DELETE"}[op]
        message = self.message if ref is None else ref.message
        if message is None or op == "send":
            return "POST", f"/channels/{self.channel.id}/messages"
        return method, f"/channels/{self.channel.id}/messages/{message.id}"

    async def edit_original(self, content: str) -> None:
        if self.message is None:
            self.message = await _mapped(self.channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
            if self.on_posted is not None:
                await self.on_posted(self.message.id)
        else:
            await _mapped(self.message.edit(content=content, allowed_mentions=_NO_PINGS), webhook=False)

    async def send_followup(self, content: str) -> SentMessage:
        return await self.send_channel(content)

    async def send_channel(self, content: str) -> SentMessage:
        message = await _mapped(self.channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
        if self.on_posted is not None:  # the first one could not be edited (deleted?): this one replaces it
            await self.on_posted(message.id)
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
    """The live tracker of each channel with a combat running. With a store, each tracker's message id is kept
    (meta ``tracker:<channel>``), so after a restart the combat's next change edits the same message."""

    def __init__(self, edit_interval: float, store: Any = None, clock: Clock | None = None,
                 pacer: RateLimitBook | None = None, min_edit_interval: float = 0.25) -> None:
        self.edit_interval, self.min_edit_interval = edit_interval, min_edit_interval
        self.store = store
        self.clock = clock
        self.pacer = pacer  # the bucket state Discord reports, shared with the narration's messages
        self._live: dict[int, MessageStreamer] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    async def _saved(self, channel: Any) -> Any:
        saved = await self.store.get_meta(f"tracker:{channel.id}") if self.store is not None else None
        if not saved or not hasattr(channel, "get_partial_message"):
            return None
        return channel.get_partial_message(int(saved))

    def _remember(self, channel_id: int) -> Callable[[int], Awaitable[None]] | None:
        if self.store is None:
            return None
        return lambda message_id: self.store.set_meta(f"tracker:{channel_id}", str(message_id))

    async def update(self, channel: Any, party: Party, line: str) -> None:
        """Show the state after a change. When the combat has ended, the tracker shows its last line and is let go."""
        if channel is None or not hasattr(channel, "send"):
            return
        streamer = self._live.get(channel.id)
        if streamer is None and (party.combat is not None or self.store is not None):
            saved = await self._saved(channel)
            if saved is not None or party.combat is not None:
                streamer = MessageStreamer(ChannelMessageSink(channel, saved, self._remember(channel.id)),
                                           edit_interval=self.edit_interval, clock=self.clock, cursor="",
                                           min_edit_interval=self.min_edit_interval, pacer=self.pacer)
                self._live[channel.id] = streamer
        if party.combat is None:
            if streamer is None:
                return
            del self._live[channel.id]
            if self.store is not None:
                await self.store.set_meta(f"tracker:{channel.id}", "")
            streamer.reset()
            streamer.feed(tracker_final(line))
            task = asyncio.get_running_loop().create_task(streamer.finish())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        streamer.reset()
        streamer.feed(tracker_text(party))

    async def ended(self, channel: Any) -> None:
        """The adventure ended (/end): a tracker still showing its combat says so and is let go."""
        await self.update(channel, Party(), "🏁 The adventure is over, and with it the combat")

    def streamer(self, channel_id: int) -> MessageStreamer | None:
        return self._live.get(channel_id)

    async def close(self) -> None:
        """Final edits of every tracker (the bot is stopping): they keep the last state they showed."""
        streamers, self._live = list(self._live.values()), {}
        await asyncio.gather(*(s.finish() for s in streamers), *self._closing, return_exceptions=True)
