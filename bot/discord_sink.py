"""The discord.py side of the MessageStreamer: performs the calls, maps discord.py errors, decides nothing.

All policy (pacing, splitting, retries, token expiry) lives in bot/discord_stream.py.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import discord

from bot.message_sink import Clock, MissingAccess, RateLimitedError, SinkError, TokenExpired

T = TypeVar("T")
TOKEN_LIFETIME = datetime.timedelta(minutes=15)
_NO_PINGS = discord.AllowedMentions.none()  # also set on the client; repeated here so model text never pings
_TOKEN_GONE = {(401, 50027), (404, 10015), (404, 10008)}  # invalid webhook token, unknown webhook / message
_NO_ACCESS = {50001, 50013}  # missing access, missing permissions


@dataclass(frozen=True, slots=True)
class SentMessage:
    """The ref the streamer gets back from a send: the discord.py message and which token can edit it."""

    message: discord.Message  # WebhookMessage for follow-ups
    via_webhook: bool


def map_error(exc: BaseException, *, webhook: bool) -> SinkError:
    """discord.py/aiohttp exception -> the streamer's error kinds. ``webhook``: the call used the interaction token."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, discord.RateLimited):  # discord.py refused to wait longer than max_ratelimit_timeout
        return RateLimitedError(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        status, code = exc.status, exc.code
        if status == 429:  # discord.py retried and gave up (or a Cloudflare 429 without Via)
            return RateLimitedError(str(exc), retry_after=_retry_after(exc), code=code)
        if webhook and (status, code) in _TOKEN_GONE:
            return TokenExpired(str(exc), status=status, code=code)
        if status == 403 and code in _NO_ACCESS:
            return MissingAccess(str(exc), status=status, code=code)
        return SinkError(str(exc), status=status, code=code)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return SinkError(f"network: {exc!r}")  # status None: transient, the streamer retries
    return SinkError(repr(exc))


def _retry_after(exc: discord.HTTPException) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After", 1.0)))
    except (TypeError, ValueError):
        return 1.0


async def _mapped(call: Awaitable[T], *, webhook: bool) -> T:
    try:
        return await call
    except (discord.DiscordException, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise map_error(e, webhook=webhook) from e


class InteractionSink:
    """MessageSink over one interaction deferred with ``response.defer(thinking=True)``: already, or by the
    ``acknowledged`` task, which runs beside the DM turn (so the LLM request need not wait for that round trip)
    and which every call waits for first. A deferral that failed leaves a token that cannot edit anything: the
    calls then raise TokenExpired and the streamer carries on in plain channel messages."""

    def __init__(self, interaction: discord.Interaction[Any], *,
                 acknowledged: asyncio.Future[Any] | None = None) -> None:
        self._interaction = interaction
        self._ack = acknowledged

    async def _acknowledged(self) -> None:
        if self._ack is None:
            return
        try:
            await asyncio.shield(self._ack)
        except asyncio.CancelledError:
            if not self._ack.cancelled():
                raise  # we are cancelled, not the deferral
            raise TokenExpired("the interaction was never acknowledged") from None
        except Exception as e:  # noqa: BLE001 - whatever stopped the deferral, the token is of no use now
            raise TokenExpired(f"the interaction was never acknowledged: {e!r}") from e
        self._ack = None

    def route(self, op: str, kind: str, ref: SentMessage | None) -> tuple[str, str]:
        """(method, path) of the call ``op`` on a message of ``kind`` would make: how the streamer finds the
        rate-limit bucket it falls in (bot/discord_pacing.py)."""
        i = self._interaction
        hook = f"/webhooks/{i.application_id}/{i.token}"
        method = {"send": "POST", "edit": "PATCH", "delete": "DELETE"}[op]
        if ref is None:
            if kind == "channel":  # a channel message not sent yet
                return method, f"/channels/{i.channel_id}/messages"
            return (method, hook) if op == "send" else (method, f"{hook}/messages/@original")
        if ref.via_webhook:
            return method, f"{hook}/messages/{ref.message.id}"
        return method, f"/channels/{ref.message.channel.id}/messages/{ref.message.id}"

    async def edit_original(self, content: str) -> None:
        await self._acknowledged()
        await _mapped(self._interaction.edit_original_response(content=content, allowed_mentions=_NO_PINGS),
                      webhook=True)

    async def send_followup(self, content: str) -> SentMessage:
        await self._acknowledged()
        msg = await _mapped(self._interaction.followup.send(content, wait=True, allowed_mentions=_NO_PINGS),
                            webhook=True)
        return SentMessage(msg, via_webhook=True)

    async def send_channel(self, content: str) -> SentMessage:
        channel = self._interaction.channel
        if channel is None or not hasattr(channel, "send"):
            raise MissingAccess("no channel to post in", status=403, code=50001)
        msg = await _mapped(channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
        return SentMessage(msg, via_webhook=False)

    async def edit(self, ref: SentMessage, content: str) -> None:
        if ref.via_webhook:  # channel messages go with the bot token: the deferral does not matter to them
            await self._acknowledged()
        await _mapped(ref.message.edit(content=content, allowed_mentions=_NO_PINGS), webhook=ref.via_webhook)

    async def delete(self, ref: SentMessage | None) -> None:
        if ref is None or ref.via_webhook:
            await self._acknowledged()
        if ref is None:
            await _mapped(self._interaction.delete_original_response(), webhook=True)
        else:
            await _mapped(ref.message.delete(), webhook=ref.via_webhook)

    async def send_ephemeral(self, content: str) -> None:
        await self._acknowledged()
        await _mapped(self._interaction.followup.send(content, ephemeral=True, allowed_mentions=_NO_PINGS),
                      webhook=True)


class ChannelSink(InteractionSink):
    """MessageSink that posts in a channel of its own (an adventure's new thread) with the bot token: its first
    message plays the part of the interaction's original response. Private notes still go to the user through
    the interaction, which must be deferred."""

    def __init__(self, interaction: discord.Interaction[Any], channel: discord.abc.Messageable) -> None:
        super().__init__(interaction)
        self._channel = channel
        self._first: SentMessage | None = None

    async def edit_original(self, content: str) -> None:
        if self._first is None:
            self._first = await self.send_channel(content)
        else:
            await self.edit(self._first, content)

    async def send_followup(self, content: str) -> SentMessage:
        return await self.send_channel(content)

    async def send_channel(self, content: str) -> SentMessage:
        msg = await _mapped(self._channel.send(content, allowed_mentions=_NO_PINGS), webhook=False)
        return SentMessage(msg, via_webhook=False)

    async def delete(self, ref: SentMessage | None) -> None:
        if ref is None:  # nothing of the channel's own to remove: the first message is only sent with text
            if self._first is not None:
                await _mapped(self._first.message.delete(), webhook=False)
                self._first = None
            return
        await super().delete(ref)


def token_deadline(interaction: discord.Interaction[Any], clock: Clock, margin: float = 30.0) -> float:
    """Clock time at which to stop using the interaction token: 15 min after the interaction, minus ``margin``.

    created_at comes from the snowflake (Discord's clock); the margin also absorbs skew with our wall clock."""
    expires = interaction.created_at + TOKEN_LIFETIME
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return clock.now() + left - margin
