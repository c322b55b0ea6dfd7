"""The combat tracker's pacing: a burst of changes is one message, edited at most once per interval, ending on
the latest state (virtual time: nothing really sleeps)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from bot.discord_tracker import CombatTrackers
from bot.dm.rules import engine
from bot.dm.rules.render import tracker_text
from bot.dm.rules.state import Party
from tests.unit.test_streamer import FakeClock


@dataclass
class FakeMessage:
    id: int
    contents: list[str]
    clock: FakeClock
    times: list[float] = field(default_factory=list)

    async def edit(self, *, content: str, allowed_mentions=None) -> "FakeMessage":
        self.contents.append(content)
        self.times.append(self.clock.now())
        return self


@dataclass
class FakeChannel:
    clock: FakeClock
    id: int = 42
    sent: list[FakeMessage] = field(default_factory=list)

    async def send(self, content: str, *, allowed_mentions=None) -> FakeMessage:
        message = FakeMessage(len(self.sent) + 1, [content], self.clock, [self.clock.now()])
        self.sent.append(message)
        return message


async def test_a_burst_of_changes_is_one_message_paced_and_the_end_is_shown():
    clock = FakeClock()
    channel = FakeChannel(clock)
    trackers = CombatTrackers(edit_interval=1.0, clock=clock)
    party, _ = engine.set_character(Party(), "u1", "Aria", name="Thessaly", max_hp=40, ac=14)
    rng = random.Random(3)
    party = engine.start_combat(party, {"combatants": [{"name": "Ogre", "hp": 59, "ac": 11, "initiative_bonus": -1}]},
                                rng).party
    states = [party]

    async def scenario():
        nonlocal party
        await trackers.update(channel, party, "start")
        await clock.sleep(0.1)
        for _ in range(10):  # ten changes within one interval
            party = engine.update_character(party, {"name": "Ogre", "hp_change": -3}).party
            states.append(party)
            await trackers.update(channel, party, "hit")
            await clock.sleep(0.05)
        await clock.sleep(5)
        last = engine.end_combat(party)
        await trackers.update(channel, last.party, last.lines[0])
        await clock.sleep(5)

    await clock.run(scenario())
    [message] = channel.sent
    assert message.contents[0] == tracker_text(states[0])  # shown at once
    assert message.contents[1:] == [tracker_text(states[-1]),  # one edit with the latest state, not ten
                                     "🏁 The combat is over after 1 round."]
    assert all(b - a >= 1.0 for a, b in zip(message.times, message.times[1:]))
    assert trackers.streamer(channel.id) is None


async def test_the_tracker_waits_for_the_channels_bucket_that_discord_says_is_empty():
    """The tracker's edits share the channel's bucket with every other message there: when Discord reports it
    empty, the next edit waits for its reset instead of earning a 429 (no interval of its own would know)."""
    from bot.discord_pacing import RateLimitBook

    clock = FakeClock()
    channel = FakeChannel(clock)
    book = RateLimitBook(clock=clock.now)
    trackers = CombatTrackers(edit_interval=1.0, clock=clock, pacer=book)
    party, _ = engine.set_character(Party(), "u1", "Aria", name="Thessaly", max_hp=40, ac=14)
    party = engine.start_combat(party, {"combatants": [{"name": "Ogre", "hp": 59, "ac": 11}]},
                                random.Random(3)).party

    async def scenario():
        nonlocal party
        await trackers.update(channel, party, "start")
        await clock.sleep(0.1)
        # Another message in this channel just used the bucket up: 0 left for the next 4 s.
        book.observe("PATCH", f"/channels/{channel.id}/messages/999", 200, {
            "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "4",
            "X-RateLimit-Bucket": "chan"})
        party = engine.update_character(party, {"name": "Ogre", "hp_change": -3}).party
        await trackers.update(channel, party, "hit")
        await clock.sleep(6)

    await clock.run(scenario())
    [message] = channel.sent
    assert message.contents[-1] == tracker_text(party)
    assert message.times[1] - message.times[0] >= 4.1 - 1e-9  # the bucket's reset, not the 1 s interval
