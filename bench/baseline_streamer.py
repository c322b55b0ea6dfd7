"""The usual way streaming LLM bots pace their Discord edits, for figure 5 only (never used by the product).

It follows the best-known open-source streaming LLM bot (llmcord): one module-level "time of the last
Discord call" shared by every channel, and a 1-second delay (EDIT_DELAY_SECONDS = 1) measured against it.
As each chunk arrives, the message is edited only if the previous edit of this message is done and a full
second has passed since the last edit *anywhere in the process*; the first piece of an answer goes out at
once (llmcord sends it as a new message) and the final edit is never held back. So with N channels streaming,
the process makes about one intermediate edit per second in total, shared by all N.

It offers the same small surface as ``bot.discord_stream.MessageStreamer`` that ``bot.discord_turn`` uses
(feed / reset / checkpoint / text / finish / fail / blocked_reason), so ``bench.bot_baseline`` can swap it in;
everything else in the bot (client, cogs, DM service, SDK clients) stays the product's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

EDIT_DELAY_SECONDS = 1.0
CURSOR = " ▌"  # the product's cursor, so the benchmark tells intermediate edits from final ones the same way


class GlobalThrottleStreamer:
    last_call_at = float("-inf")  # shared by all channels: the global throttle

    def __init__(self, sink: Any, **_: Any) -> None:
        self._sink = sink
        self._text = ""
        self._checkpoint = 0
        self._shown: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.blocked_reason: str | None = None
        self.blocked_told = False
        self.edit_count = self.error_count = 0

    @property
    def text(self) -> str:
        return self._text

    def feed(self, text: str) -> None:
        self._text += text
        if not self._text.strip():
            return
        cls = type(self)
        idle = self._task is None or self._task.done()
        first = self._shown is None and self._task is None
        if first or (idle and time.monotonic() - cls.last_call_at >= EDIT_DELAY_SECONDS):
            cls.last_call_at = time.monotonic()
            self._edit_soon(self._text + CURSOR)

    def reset(self) -> None:
        self._text = self._text[: self._checkpoint]

    def checkpoint(self) -> None:
        self._checkpoint = len(self._text)

    async def finish(self) -> None:
        await self._final(self._text.strip() or "…")

    async def fail(self, message: str) -> None:
        await self._final(f"{self._text}\n\n*⚠️ The DM was interrupted: {message}*".strip())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _edit_soon(self, content: str) -> None:
        previous = self._task

        async def edit() -> None:
            if previous is not None:
                await previous  # one call at a time per message, as llmcord awaits its edit task
            await self._edit(content)

        self._task = asyncio.get_running_loop().create_task(edit())

    async def _final(self, content: str) -> None:
        if self._task is not None:
            await self._task
        type(self).last_call_at = time.monotonic()
        await self._edit(content)

    async def _edit(self, content: str) -> None:
        if content == self._shown:
            return
        try:
            await self._sink.edit_original(content)
            self._shown = content
            self.edit_count += 1
        except Exception as e:  # noqa: BLE001 - like llmcord: log and carry on
            self.error_count += 1
            log.warning("baseline edit failed: %r", e)
