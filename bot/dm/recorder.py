"""Durable writes of a turn's outcome: what a player saw is kept.

Each store write is one transaction, so a failed one left nothing and can simply be tried again (another
process holding the database past the busy timeout, a full disk that frees up). An outcome write runs as its
own task: a stop that cancels the turn while it writes does not cut it, and ``wait`` (called before the store
closes) lets it finish. If the answer itself cannot be stored, the action, the shown rolls and every reported
usage are kept as an interrupted turn; if even that fails, the log has the numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from bot.store.base import CallRecord, RollRecord, Session, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
WRITE_ATTEMPTS = 4


class TurnRecorder:
    def __init__(self, store: Store, wait: Callable[[object], float] | None = None) -> None:
        self.store = store
        self.wait_between = wait or wait_exponential(multiplier=0.25, max=2)
        self._writes: set[asyncio.Task] = set()

    async def durably(self, write: Callable[[], Awaitable[T]]) -> T:
        """A store write, tried again while it fails."""
        async for attempt in AsyncRetrying(stop=stop_after_attempt(WRITE_ATTEMPTS), wait=self.wait_between,
                                           reraise=True):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning("retrying a store write (attempt %d)", attempt.retry_state.attempt_number)
                return await write()
        raise AssertionError("unreachable")

    def background(self, write: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``write`` to its end whatever happens to its caller; ``wait`` waits for it."""
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    def shielded(self, write: Awaitable[T]) -> Awaitable[T]:
        """Wait for ``write``; if the waiting turn is cancelled, the write still runs to its end."""
        return asyncio.shield(self.background(write))

    async def wait(self, timeout: float) -> None:
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout)

    async def keep_failed(self, session: Session, player_turns: list[int], calls: list[CallRecord],
                          rolls: list[RollRecord], *, interrupted: bool = False) -> None:
        """A turn without an answer: keep the action, the shown rolls and every reported usage."""
        try:
            await self.durably(lambda: self.store.fail_turn(session.id, player_turns, calls,
                                                            interrupted=interrupted, rolls=rolls))
        except Exception:  # noqa: BLE001 - the player's message must still arrive; the numbers go to the log
            log.exception("could not store a failed turn in channel %s; its usage was %s",
                          session.channel_id, [c.usage for c in calls])

    async def save(self, session: Session, player_turns: list[int], text: str, calls: list[CallRecord],
                   rolls: list[RollRecord]) -> bool:
        """Store the finished turn; if that keeps failing, keep it as interrupted. True when stored whole."""
        try:
            await self.durably(lambda: self.store.complete_turn(session.id, player_turns, text, calls, rolls))
            return True
        except Exception:  # noqa: BLE001
            log.exception("could not store the DM's answer in channel %s; keeping the turn as interrupted",
                          session.channel_id)
        await self.keep_failed(session, player_turns, calls, rolls, interrupted=True)
        return False
