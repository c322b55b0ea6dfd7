"""What the MessageStreamer needs from Discord, and nothing else: the ``MessageSink`` protocol, the errors a
sink raises, and the clock the streamer paces itself by (injected in tests).

``bot/discord_sink.py`` implements the sink with discord.py; tests use a recording fake.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

MessageRef = Any  # opaque: whatever the sink's send_* returned; handed back to edit/delete


class Clock(Protocol):
    def now(self) -> float: ...  # monotonic seconds
    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class MessageSink(Protocol):
    async def edit_original(self, content: str) -> None: ...
    async def send_followup(self, content: str) -> MessageRef: ...
    async def send_channel(self, content: str) -> MessageRef: ...
    async def edit(self, ref: MessageRef, content: str) -> None: ...
    async def delete(self, ref: MessageRef | None) -> None: ...
    async def send_ephemeral(self, content: str) -> None: ...


class SinkError(Exception):
    def __init__(self, message: str = "", *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    @property
    def retryable(self) -> bool:
        # 4xx answers are deterministic: repeating them only counts towards Discord's invalid-request ban.
        return self.status is None or self.status >= 500 or self.status == 408


class TokenExpired(SinkError):
    """The interaction token is no longer valid: webhook edits and sends cannot work any more."""


class RateLimitedError(SinkError):
    """discord.py gave up waiting on 429s."""

    def __init__(self, message: str = "", *, retry_after: float, status: int | None = 429, code: int | None = None):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class MissingAccess(SinkError):
    """403: the bot may not post here."""
