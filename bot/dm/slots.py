"""Turn slots: which DM turns may run or wait in a channel, one at a time, at most ``max_queued`` of them.

The bookkeeping is exact across awaits: a turn is counted *before* anything it awaits (the rate limiter may be
a Redis round trip), so two actions arriving together can never both see an empty queue, and a channel's state
is forgotten only when nobody is counted in it any more (forgetting it earlier would hand the next arrival a
new lock while a turn still holds the old one: two DM turns at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


class SlotRefused(Exception):
    """The channel's queue is full, or its adventure is ending; ``message`` is for the player."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass(eq=False)
class ChannelTurns:
    """One channel's turns in this process: those counted (waiting or running) and the lock they share."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    counted: int = 0  # waiting for the lock or holding it (admitted or being admitted)
    running: int = 0  # generation of the turn holding the lock; 0 while none does
    generation: int = 0
    ending: bool = False  # /end is waiting: turns still queued are refused when their time comes


class TurnSlots:
    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self._channels: dict[str, ChannelTurns] = {}

    def running(self, channel_id: str) -> int:
        """The generation of the turn running in the channel now, or 0."""
        state = self._channels.get(channel_id)
        return state.running if state else 0

    @asynccontextmanager
    async def turn(self, channel_id: str, admit: Callable[[], Awaitable[None]]) -> AsyncIterator[int]:
        """Hold the channel's turn slot. ``admit`` (the rate limit) runs after the queue check and may raise to
        refuse; yields the turn's generation number."""
        state = self._channels.setdefault(channel_id, ChannelTurns())
        if state.ending:
            raise SlotRefused("no_session", "This adventure is ending.")
        waiting = state.counted - (1 if state.running else 0)
        if state.counted >= self.max_queued:
            raise SlotRefused("busy", f"The DM is still answering {max(waiting, 1)} earlier actions in this "
                                      "channel. Try again in a moment.")
        state.counted += 1  # before any await: the next arrival sees this turn
        try:
            await admit()
            async with state.lock:
                if state.ending:
                    raise SlotRefused("no_session", "This adventure ended while your action waited.")
                state.generation += 1
                state.running = state.generation
                try:
                    yield state.running
                finally:
                    state.running = 0
        finally:
            self._release(channel_id, state)

    @asynccontextmanager
    async def exclusive(self, channel_id: str) -> AsyncIterator[None]:
        """For /end: turns still waiting are refused, the running one is waited for, nothing runs meanwhile."""
        state = self._channels.setdefault(channel_id, ChannelTurns())
        state.counted += 1
        state.ending = True
        try:
            async with state.lock:
                yield
        finally:
            state.ending = False
            self._release(channel_id, state)

    def _release(self, channel_id: str, state: ChannelTurns) -> None:
        state.counted -= 1
        if state.counted == 0 and self._channels.get(channel_id) is state:
            del self._channels[channel_id]  # idle channels keep no state in memory
