"""The DM service with the pieces scale-out swaps in: a rate limiter that awaits (Redis) and a store whose
turn lock is held by someone else (another process)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from bot.dm.events import Done
from bot.dm.guards import ChannelRateLimiter, RetryPolicy
from bot.dm.service import DMService
from bot.store.base import Channel, Player
from tests.fakes import ScriptedProvider, reply
from tests.unit.conftest import make_config

HALL = Channel("g1", "hall")
ARIA, BRAM = Player("u1", "Aria"), Player("u2", "Bram")


class AwaitingLimiter(ChannelRateLimiter):
    """Counts like the in-memory windows, but yields to the loop first, as a Redis round trip does."""

    async def acquire(self, channel_id: str) -> float | None:
        await asyncio.sleep(0.01)
        return await super().acquire(channel_id)


async def run(stream) -> list:
    return [event async for event in stream]


async def test_actions_arriving_together_with_an_awaiting_rate_limiter(store, sleep):
    config = make_config()
    provider = ScriptedProvider(default=lambda request: reply("The DM answers."))
    service = DMService(config, store, provider, rate_limiter=AwaitingLimiter(100),
                        retry=RetryPolicy(config.retry, sleep=sleep))
    assert isinstance((await run(service.start(HALL, ARIA, "a keep")))[-1], Done)
    results = await asyncio.gather(*(run(service.act(HALL, p, f"I try door {i}"))
                                     for i, p in enumerate([ARIA, BRAM, ARIA, BRAM])))
    assert all(isinstance(events[-1], Done) for events in results)
    assert service.slots._channels == {}, "idle channels keep no state"


async def test_a_turn_waits_for_the_sessions_turn_lock(store, sleep):
    """The lock another process holds: the turn starts (and calls the model) only once it is free."""
    config = make_config()
    provider = ScriptedProvider(default=lambda request: reply("The DM answers."))
    service = DMService(config, store, provider, retry=RetryPolicy(config.retry, sleep=sleep))
    await run(service.start(HALL, ARIA, "a keep"))
    session = await store.active_session(HALL.channel_id)
    held = asyncio.Event()
    release = asyncio.Event()

    async def other_process() -> None:
        async with store.turn_lock(session.id):
            held.set()
            await release.wait()

    holder = asyncio.create_task(other_process())
    await held.wait()
    turn = asyncio.create_task(run(service.act(HALL, BRAM, "I wait")))
    await asyncio.sleep(0.05)
    assert provider.calls == 1 and not turn.done(), "no call while the lock is held elsewhere"
    release.set()
    await holder
    assert isinstance((await turn)[-1], Done) and provider.calls == 2
