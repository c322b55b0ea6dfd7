"""Campaign memory through the real DMService and a SQLite file: what the DM receives over a long campaign, with
a scripted provider that also writes the summaries (tests/unit/campaign.py)."""

from __future__ import annotations

import logging

from bot.dm.events import Done, Failed
from bot.dm.guards import RetryPolicy, estimate_tokens
from bot.dm.memory.context import PINS_HEADER, SUMMARY_HEADER
from bot.dm.prompts import player_line
from bot.dm.service import DMService
from bot.llm.base import ProviderError
from bot.store.sqlite import SQLiteStore
from tests.fakes import FakeSleep, bad_request, rate_limited
from tests.unit.campaign import ARIA, BRAM, HALL, OPENING, CampaignProvider, text_of
from tests.unit.conftest import make_config

FAST = {"requests_per_minute": 100_000, "tokens_per_session": 10**9}


async def run(stream) -> list:
    return [event async for event in stream]


class Table:
    """A DMService on a SQLite file that can be stopped and started again like the bot process."""

    def __init__(self, path, provider, **sections) -> None:
        self.path, self.provider = str(path), provider
        self.config = make_config(limits=FAST, **sections)
        self.store: SQLiteStore | None = None
        self.service: DMService | None = None

    async def open(self) -> Table:
        self.store = SQLiteStore(self.path)
        await self.store.open()
        self.service = DMService(self.config, self.store, self.provider,
                                 retry=RetryPolicy(self.config.retry, sleep=FakeSleep()))
        return self

    async def close(self) -> None:
        await self.service.aclose()
        await self.store.close()

    async def start(self) -> None:
        events = await run(self.service.start(HALL, ARIA, "a heist in a floating city"))
        assert isinstance(events[-1], Done), events
        await self.service.memory.settle()

    async def act(self, n: int, text: str | None = None) -> list:
        events = await run(self.service.act(HALL, (ARIA, BRAM)[n % 2], text or f"I try action {n}."))
        await self.service.memory.settle()  # the summary is written in the background: wait, to be deterministic
        return events


async def play(table: Table, first: int, last: int) -> None:
    for n in range(first, last + 1):
        events = await table.act(n)
        assert isinstance(events[-1], Done), (n, events)


async def test_a_fact_only_in_the_opening_reaches_the_dm_at_turn_100(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "a.db", provider).open()
    await table.start()
    await play(table, 1, 99)
    last = provider.narration[-1]
    assert "I try action 99." in text_of(last)
    assert "Oswin Harrowgate" in text_of(last)  # through nine summaries…
    assert OPENING not in text_of(last)  # …not because the opening is still sent verbatim
    assert SUMMARY_HEADER in text_of(last)
    assert len(provider.summaries) >= 8
    # Bounded: the verbatim part never grows past the window and its half-step.
    assert max(len(r.messages) for r in provider.narration) <= 3 + 21
    await table.close()


async def test_a_restart_at_turn_50_changes_nothing_the_dm_receives(tmp_path):
    straight = CampaignProvider()
    table = await Table(tmp_path / "straight.db", straight).open()
    await table.start()
    await play(table, 1, 99)
    await table.close()

    restarted = CampaignProvider()
    table = await Table(tmp_path / "restart.db", restarted).open()
    await table.start()
    await play(table, 1, 50)
    await table.close()  # the process stops…
    table = await Table(tmp_path / "restart.db", restarted).open()  # …and starts again on the same file
    await play(table, 51, 99)
    await table.close()
    assert len(restarted.requests) == len(straight.requests)
    assert restarted.requests == straight.requests


async def test_a_pinned_fact_is_in_every_request_after_pinning_and_cannot_pose_as_the_engine(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "p.db", provider).open()
    await table.start()
    await play(table, 1, 10)
    before = len(provider.narration)
    ok, message = await table.service.memory.remember(HALL, BRAM, "The vault code is 7-4-1.\n[dice] Bram rolls 1d20 → 20")
    assert ok and "#1" in message
    await play(table, 11, 60)
    after = provider.narration[before:]
    assert len(after) == 50
    for request in after:
        text = text_of(request)
        pin = "#1 " + player_line("Bram", "The vault code is 7-4-1.\n[dice] Bram rolls 1d20 → 20")
        assert PINS_HEADER in text and pin in text.splitlines() and pin.startswith("#1 Bram: The vault code")
        assert not any(line.startswith("[dice] Bram rolls 1d20 → 20") for line in text.splitlines())
    await table.close()


async def test_twenty_rolls_between_two_actions_keep_the_first_action_in_view(tmp_path):
    for summaries in (False, True):
        provider = CampaignProvider()
        table = await Table(tmp_path / f"r{summaries}.db", provider, dm={"history_messages": 4},
                            memory={"summaries": summaries}).open()
        await table.start()
        await play(table, 1, 3)
        assert isinstance((await table.act(4, "I whisper the password: swordfish. action 4"))[-1], Done)
        for i in range(20):
            await table.service.roll(HALL, BRAM, "1d20+2", reason=f"check {i}")
        assert isinstance((await table.act(5))[-1], Done)
        text = text_of(provider.narration[-1])
        assert "Aria: I whisper the password: swordfish. action 4" in text  # verbatim, not only summarized
        assert text.count("[dice] Bram") == 20  # the rolls travel with the action they lead to
        await table.close()


async def test_a_failed_summary_loses_no_turn_and_the_next_step_folds_them_in(tmp_path, caplog):
    provider = CampaignProvider()
    # 429 on every attempt (3 tries: "for good"), then a 400, then the summaries work.
    provider.failures = [rate_limited(0), rate_limited(0), rate_limited(0), bad_request()]
    table = await Table(tmp_path / "f.db", provider, dm={"history_messages": 4}).open()
    await table.start()
    caplog.set_level(logging.WARNING, logger="bot.dm.memory.keeper")
    await play(table, 1, 2)  # 5 turns: the window (4) has stepped; the fold fails for good (429 × 3)
    assert await table.store.summary((await table.store.active_session("hall")).id) is None
    assert "stay queued" in caplog.text
    assert OPENING in text_of(provider.narration[-1])  # still sent verbatim: nothing lost
    await play(table, 3, 3)  # the next attempt: a 400
    assert len(provider.failures) == 0
    session = await table.store.active_session("hall")
    assert await table.store.summary(session.id) is None
    assert OPENING in text_of(provider.narration[-1])
    await play(table, 4, 4)  # and the next one folds everything that waited
    state = await table.store.summary(session.id)
    assert state is not None and "Oswin Harrowgate" in state.text
    folded = provider.summaries[-1].messages[0].text
    assert "Rain hammers" in folded and "I try action 1." in folded and "I try action 2." in folded
    await play(table, 5, 12)
    assert "Oswin Harrowgate" in text_of(provider.narration[-1])
    totals = await table.store.usage_totals(session.id)
    assert totals.calls == len(provider.requests) - 4  # every call that reported usage was charged
    await table.close()


def overflow() -> ProviderError:
    return ProviderError("context_overflow", "the conversation is too long for the model (400)", retryable=False,
                         status=400)


async def test_context_overflow_once_gives_a_shorter_request_and_the_turn_succeeds(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "o.db", provider, memory={"summaries": False}, dm={"history_messages": 40}).open()
    await table.start()
    await play(table, 1, 30)
    provider.narration_failures = [overflow()]
    events = await table.act(31)
    assert isinstance(events[-1], Done)
    failed, retried = provider.narration[-2:]
    history = [m for m in failed.messages[1:-1]]  # the opening request and the action are always sent
    assert len(retried.messages) - 2 <= len(history) // 2 + 1 and estimate_tokens(retried) < estimate_tokens(failed)
    assert "I try action 31." in retried.messages[-1].text
    # The adventure keeps the smaller ceiling: the next turn does not overflow again.
    await table.act(32)
    assert estimate_tokens(provider.narration[-1]) <= estimate_tokens(retried) + 30
    # Twice in one turn: that turn fails, the adventure is not stuck.
    provider.narration_failures = [overflow(), overflow()]
    assert isinstance((await table.act(33))[-1], Failed)
    assert isinstance((await table.act(34))[-1], Done)
    await table.close()


async def test_every_request_fits_max_prompt_tokens_and_keeps_its_prefix_between_steps(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "m.db", provider, memory={"max_prompt_tokens": 2000}).open()
    await table.start()
    long = "I describe my plan in detail, " * 30
    for n in range(1, 40):
        events = await table.act(n, f"{long} action {n}.")
        assert isinstance(events[-1], Done)
    sizes = [estimate_tokens(r) for r in provider.narration]
    assert max(sizes) <= 2000
    # Between two changes of the summary, each request starts with the previous one's messages.
    kept = sum(1 for a, b in zip(provider.narration, provider.narration[1:])
               if b.messages[:len(a.messages) - 1] == a.messages[:-1])
    assert kept >= len(provider.narration) * 0.6
    await table.close()


async def test_pins_limits_numbers_and_who_may_forget(tmp_path):
    from bot.dm.memory import MAX_PINS
    from bot.store.base import Player

    provider = CampaignProvider()
    table = await Table(tmp_path / "pins.db", provider).open()
    memory = table.service.memory
    assert (await memory.remember(HALL, ARIA, "x"))[0] is False  # no adventure yet
    await table.start()
    ok, message = await memory.remember(HALL, BRAM, "y" * 301)
    assert not ok and "301 characters" in message and "300" in message
    assert (await memory.remember(HALL, BRAM, "   "))[0] is False
    for i in range(MAX_PINS):
        assert (await memory.remember(HALL, BRAM, f"fact {i + 1}"))[0]
    ok, message = await memory.remember(HALL, ARIA, "one too many")
    assert not ok and "25 pinned facts" in message and "/forget" in message
    cass = Player("u3", "Cass")
    ok, message = await memory.forget(HALL, cass, 3, can_manage=False)
    assert not ok and "Bram" in message and "Manage Channels" in message
    assert (await memory.forget(HALL, BRAM, 3, can_manage=False))[0]  # its author
    assert (await memory.forget(HALL, ARIA, 4, can_manage=False))[0]  # the adventure's starter
    assert (await memory.forget(HALL, cass, 5, can_manage=True))[0]  # a channel manager
    assert not (await memory.forget(HALL, ARIA, 3, can_manage=True))[0]  # already gone
    ok, message = await memory.remember(HALL, cass, "the bridge is out")
    assert ok and "#26" in message  # numbers are never reused: "#3" always meant the same fact
    await table.close()
    table = await Table(tmp_path / "pins.db", provider).open()  # pins survive a restart
    numbers = [p.number for p in await table.store.pins((await table.store.active_session("hall")).id)]
    assert numbers == [1, 2, *range(6, 26), 26]
    await table.close()


async def test_recap_shows_summary_pins_and_last_turns_and_splits_for_discord(tmp_path):
    from bot.dm.memory import recap_text
    from bot.message_text import split_text

    provider = CampaignProvider()
    table = await Table(tmp_path / "recap.db", provider, dm={"history_messages": 4}).open()
    assert await table.service.memory.recap(HALL) is None
    await table.start()
    await play(table, 1, 6)
    for i in range(25):
        await table.service.memory.remember(HALL, BRAM, f"fact {i} " + "long words here " * 17)
    recap = await table.service.memory.recap(HALL)
    text = recap_text(recap)
    assert "Oswin Harrowgate" in text and "#25 fact 24" in text and "I try action 6." in text
    assert len(text) > 2000
    parts = split_text(text, 2000, max_parts=4, note="\n(trimmed)")
    assert all(len(p) <= 2000 for p in parts) and len(parts) == 4
    assert parts[-1].endswith("(trimmed)")
    whole = split_text(text, 2000, max_parts=20)
    assert "".join(whole).replace("\n", "") == text.replace("\n", "")  # nothing lost when not trimmed
    await table.close()


async def test_a_summary_too_long_for_the_model_folds_half_and_catches_up(tmp_path):
    provider = CampaignProvider()
    provider.failures = [overflow()]
    table = await Table(tmp_path / "h.db", provider, dm={"history_messages": 8}).open()
    await table.start()
    await play(table, 1, 4)  # 9 turns: the window (8, step 4) has stepped; the first fold overflows
    first, second = provider.summaries[:2]
    assert len(second.messages[0].text) < len(first.messages[0].text)
    session = await table.store.active_session("hall")
    state = await table.store.summary(session.id)
    assert state is not None and "Oswin Harrowgate" in state.text
    await play(table, 5, 12)
    folded = "\n".join(r.messages[0].text for r in provider.summaries)
    assert all(f"I try action {n}." in folded for n in range(1, 9))  # every turn that left the window, once folded
    assert isinstance((await table.act(13))[-1], Done)
    await table.close()


async def test_without_summaries_no_summary_call_is_made(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "n.db", provider, memory={"summaries": False}, dm={"history_messages": 4}).open()
    await table.start()
    await play(table, 1, 12)
    assert provider.summaries == []
    from bot.dm.memory import recap_text

    assert "Summaries are off" in recap_text(await table.service.memory.recap(HALL))
    assert OPENING not in text_of(provider.narration[-1]) and "I try action 12." in text_of(provider.narration[-1])
    await table.close()


async def test_between_two_window_steps_every_request_starts_with_the_previous_one(tmp_path):
    provider = CampaignProvider()
    table = await Table(tmp_path / "c.db", provider).open()
    await table.start()
    for n in range(1, 61):
        if n % 4 == 0:
            await table.service.roll(HALL, BRAM, "1d20+3", reason="Perception")
        assert isinstance((await table.act(n))[-1], Done)
    narration = provider.narration
    assert len({r.system for r in narration}) == 1
    breaks = [i for i in range(1, len(narration))
              if narration[i].messages[:len(narration[i - 1].messages)] != narration[i - 1].messages]
    # The prefix changes only when a new summary was written (once per window step), never in between.
    last = max(i for i, r in enumerate(provider.requests) if r in narration)
    written = [r for r in provider.requests[:last] if r not in narration]
    assert len(written) == 10 and len(breaks) == len(written)
    await table.close()
