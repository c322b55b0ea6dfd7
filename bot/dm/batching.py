"""Actions batched while the DM narrates: a table of several players gets one answer for what they all did.

While a turn runs in a channel, the first action that arrives opens a batch and waits for the channel's turn slot
(it is the batch's *leader*: its face shows the answer). Actions arriving after it, until the slot is taken,
join the batch instead of queueing turns of their own (*followers*). When the slot is taken the batch closes:
one LLM call answers every action in it, in arrival order, as one user message; an action arriving meanwhile
opens the next batch. A batch is one turn for the rate limit, the queue and the budget.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.dm.events import BatchTicket, Done, Failed
from bot.store.base import Player

MAX_BATCH = 8  # actions in one batch; more are refused ("the DM is busy")


@dataclass(eq=False)
class Batch:
    ticket: BatchTicket
    actions: list[tuple[Player, str]]
    outcome: asyncio.Future[Done | Failed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, outcome: Done | Failed) -> None:
        """What every follower is told at the end (the leader sees the turn's own events)."""
        if not self.outcome.done():
            self.outcome.set_result(outcome)


class ActionBatches:
    """The open batch of each channel: the one whose leader waits for the turn slot."""

    def __init__(self) -> None:
        self._open: dict[str, Batch] = {}

    def joinable(self, channel_id: str) -> Batch | None:
        return self._open.get(channel_id)

    def open(self, channel_id: str, player: Player, text: str) -> Batch:
        batch = Batch(BatchTicket([player]), [(player, text)])
        self._open[channel_id] = batch
        return batch

    @staticmethod
    def join(batch: Batch, player: Player, text: str) -> int:
        """Add an action; returns its place in the batch (1 is the leader's)."""
        batch.actions.append((player, text))
        batch.ticket.players.append(player)
        return len(batch.actions)

    def close(self, channel_id: str, batch: Batch) -> None:
        """No more joins: the batch's turn is starting (or will not run)."""
        if self._open.get(channel_id) is batch:
            del self._open[channel_id]
