"""The LLM fault matrix, end to end: the real DungeonMasterBot (cogs, DMService, SQLite) in-process against the
Discord stand-in, calling the real anthropic / openai SDK clients against a local LLM server (llmock) that
injects each fault. Every case must end, within 15 s, with the answer or a clear message in the channel,
nothing left on "thinking…" or with a writing cursor, and the usage ledger holding exactly what the provider
reported — nothing for a call that failed before its usage arrived.

docs/faults.md has the table of these cases and what each shows and charges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bot.llm import make_provider
from tests.discord.conftest import GENERAL, OTHER, make_dm_bot, point_discord_py  # noqa: F401 (fixtures)
from tests.e2e.faultkit import (
    CURSOR,
    INTERRUPTED,
    RecordingProvider,
    as_row,
    closed_port,
    ledger,
)

OPENING = "Rain hammers the roof of the Gilded Stag. A stranger waves you over."
ANSWER = ("The stranger slides a folded map across the table. Ink marks a tower on the northern moor, "
          "and beside it someone has written one word in red: beware.")

# Small enough that every case ends in a few seconds, large enough to be real waits.
TIMEOUT = 1.0  # [llm] timeout_seconds: the longest silence tolerated
RETRY = {"attempts": 3, "initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "max_retry_after_seconds": 2.0}
BOUND = 15.0  # the issue: every case ends within 15 s


@dataclass(frozen=True)
class Case:
    id: str
    provider: str
    inject: Callable[..., object]  # (llmock) -> None: script the fault for the /act call
    answer: bool  # True: the answer is shown in full; False: a clear message is shown instead
    says: str = ""  # part of the message the user must see
    calls: int | None = None  # LLM calls the /act makes (attempts), when it is fixed
    public_note: bool = False  # the failure came after text was shown: the public message ends with a note
    base_url: Callable[..., str] | None = None  # (llmock, provider) -> base_url; default: llmock


def _refused(llmock, provider: str) -> str:
    return f"http://127.0.0.1:{closed_port()}" + ("/v1" if provider == "openai" else "")


CASES = [
    # 429 with a short Retry-After: waited for, retried, answered. Both providers read retry-after(-ms).
    *(Case(f"429-short-retry-after-{p}", p, lambda m: m.rate_limit(retry_after=0.5), True, calls=2)
      for p in ("anthropic", "openai")),
    # 429 asking for longer than max_retry_after_seconds: no retry; the user is told when to come back.
    *(Case(f"429-long-retry-after-{p}", p, lambda m: m.rate_limit(retry_after=120, times=None), False,
           says="asks us to wait 120 s. Try again in 120 s", calls=1) for p in ("anthropic", "openai")),
    Case("500-once-openai", "openai", lambda m: m.fail(500), True, calls=2),
    Case("500-always-anthropic", "anthropic", lambda m: m.fail(500, times=None), False,
         says="The AI provider is not answering right now", calls=3),
    Case("503-once-anthropic", "anthropic", lambda m: m.fail(503), True, calls=2),
    Case("503-always-openai", "openai", lambda m: m.fail(503, times=None), False,
         says="had a server error (503)", calls=3),
    Case("529-once-anthropic", "anthropic", lambda m: m.fail(529), True, calls=2),
    Case("529-always-anthropic", "anthropic", lambda m: m.fail(529, times=None), False,
         says="is overloaded (529)", calls=3),
    Case("529-always-openai", "openai", lambda m: m.fail(529, times=None), False,
         says="is overloaded (529)", calls=3),
    # Nothing at all (no status line) for longer than timeout_seconds.
    Case("timeout-before-first-byte-once-anthropic", "anthropic", lambda m: m.delay(3), True, calls=2),
    Case("timeout-before-first-byte-always-openai", "openai", lambda m: m.delay(3, times=None), False,
         says="did not answer in time", calls=3),
    # Some text, then silence for longer than timeout_seconds.
    *(Case(f"stall-mid-stream-once-{p}", p, lambda m: m.stall(after_chunks=4, seconds=3), True, calls=2)
      for p in ("anthropic", "openai")),
    Case("stall-mid-stream-always-anthropic", "anthropic", lambda m: m.stall(after_chunks=4, seconds=3, times=None),
         False, says="did not answer in time", calls=3, public_note=True),
    # The connection is cut after some text.
    *(Case(f"connection-cut-mid-stream-once-{p}", p, lambda m: m.disconnect(after_chunks=4), True, calls=2)
      for p in ("anthropic", "openai")),
    Case("connection-cut-mid-stream-always-openai", "openai", lambda m: m.disconnect(after_chunks=4, times=None),
         False, says="The AI provider is not answering right now", calls=3, public_note=True),
    # The stream ends cleanly but early (no finish reason): not taken for a whole answer.
    Case("truncated-stream-always-anthropic", "anthropic", lambda m: m.truncate(after_chunks=4, times=None), False,
         says="ended the answer before it was finished", calls=3, public_note=True),
    # Nothing listens at the configured address.
    *(Case(f"connection-refused-{p}", p, lambda m: None, False, says="could not connect to the model server"
           if p == "anthropic" else "the connection to the model server", calls=3, base_url=_refused)
      for p in ("anthropic", "openai")),
    # Our request or our key is wrong: one call, no retry, a message that says whom to tell.
    *(Case(f"400-{p}", p, lambda m: m.fail(400, times=None), False, says="refused the request (400)", calls=1)
      for p in ("anthropic", "openai")),
    *(Case(f"401-{p}", p, lambda m: m.fail(401, times=None), False, says="rejected the API key (401)", calls=1)
      for p in ("anthropic", "openai")),
    # A chunk that is not JSON in the middle of the stream.
    *(Case(f"malformed-sse-once-{p}", p, lambda m: m.corrupt(after_chunks=4), True, calls=2)
      for p in ("anthropic", "openai")),
    Case("malformed-sse-always-openai", "openai", lambda m: m.corrupt(after_chunks=4, times=None), False,
         says="sent malformed data in the stream", calls=3, public_note=True),
]


@pytest.fixture
async def bot_against(make_dm_bot, llmock):  # noqa: F811 (the fixture imported above)
    """A DungeonMasterBot whose provider is the real SDK client of ``provider`` at ``base_url``."""

    async def make(provider: str, base_url: str):
        model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
        recorder = RecordingProvider(make_provider(provider, model, api_key=None, base_url=base_url,
                                                   timeout_seconds=TIMEOUT))
        h = await make_dm_bot(recorder, llm={"provider": provider, "model": model, "timeout_seconds": TIMEOUT},
                              retry=RETRY, dm={"dm_rolls": False})
        return h, recorder

    return make


def assert_nothing_stuck(h) -> None:
    for message in h.standin.messages(GENERAL, include_deleted=False):
        assert not message.loading, f"stuck on thinking…: {message}"
        assert not message.content.endswith(CURSOR), f"stuck writing: {message.content!r}"
    assert h.standin.validation_errors == [] and h.standin.unknown_routes == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_llm_fault(case: Case, bot_against, llmock):
    llmock.tool_mode("off")
    llmock.reply(OPENING).reply(ANSWER, times=None)
    if case.base_url is None:
        h, recorder = await bot_against(case.provider, llmock.base_url(case.provider))
        start = await h.run("start", {"premise": "a tavern"}, timeout=BOUND)
        [opening] = [m for m in h.visible(start) if not m.deleted]
        assert opening.content == OPENING
    else:  # the provider is unreachable from the start: open the adventure with a healthy one first
        healthy = RecordingProvider(make_provider(case.provider, "m", api_key=None,
                                                  base_url=llmock.base_url(case.provider), timeout_seconds=TIMEOUT))
        h, recorder = await bot_against(case.provider, case.base_url(llmock, case.provider))
        real, h.bot.dm.provider = h.bot.dm.provider, healthy
        await h.run("start", {"premise": "a tavern"}, timeout=BOUND)
        h.bot.dm.provider = real
        await healthy.aclose()
        recorder.reported[:0] = healthy.reported
    before = recorder.calls
    case.inject(llmock)

    act = await h.run("act", {"action": "I sit down with the stranger"}, user=OTHER, timeout=BOUND)

    shown = [m for m in h.visible(act) if not m.deleted]
    public = [m for m in shown if not m.ephemeral]
    private = [m for m in shown if m.ephemeral]
    if case.answer:
        assert [m.content for m in public] == [ANSWER], "the answer, whole, once, and nothing else"
        assert private == []
    elif case.public_note:  # text had been shown: the public message says it was cut, and why
        [message] = public
        assert INTERRUPTED in message.content and case.says in message.content, message.content
    else:  # nothing was shown: no public trace, the user alone is told why
        assert public == [], [m.content for m in public]
        [message] = private
        assert case.says in message.content, message.content
    assert_nothing_stuck(h)
    print(f"\n{case.id}: {[('private' if m.ephemeral else 'public', m.content) for m in shown]}")

    if case.calls is not None:
        assert recorder.calls - before == case.calls
    # Charged exactly what the provider reported, call by call; a call that streamed but never reported its
    # usage (an OpenAI stream cut before its last chunk) is charged from the bot's estimate, marked as such;
    # a call refused before it streamed costs nothing.
    database = h.bot.config.sqlite_path
    assert ledger(database) == [as_row(u) for u in recorder.reported if u is not None]
    estimated = ledger(database, estimated=True)
    assert len(estimated) <= recorder.reported.count(None)
    assert all(row[0] > 0 for row in estimated)
    if case.answer:
        assert recorder.reported[-1] is not None and recorder.reported[-1].output_tokens > 0
    if case.id.startswith(("429", "500", "503", "529", "400", "401", "connection-refused", "timeout-before")):
        failed = recorder.reported[before:-1] if case.answer else recorder.reported[before:]
        assert failed == [None] * len(failed)
        assert estimated == [], "a call refused before it streamed is billed nothing, so charged nothing"
    tokens = await h.run("tokens", user=OTHER)
    [budget] = [m for m in h.visible(tokens) if not m.deleted]
    used = sum(sum(as_row(u)) for u in recorder.reported if u is not None) + sum(map(sum, estimated))
    assert f"{used:,} used" in budget.content
    if estimated:
        assert f"about {sum(map(sum, estimated)):,} of them estimated" in budget.content
    print(f"charged per call: {recorder.reported}")


async def test_retry_after_is_waited_for(bot_against, llmock):
    """The 429's Retry-After (0.5 s, sent as retry-after-ms) is honoured before the retry, never less."""
    llmock.tool_mode("off")
    llmock.reply(OPENING).reply(ANSWER, times=None)
    h, _ = await bot_against("openai", llmock.base_url("openai"))
    llmock.rate_limit(retry_after=0.5)
    await h.run("start", timeout=BOUND)
    first, second = llmock.requests
    assert first.status == 429 and second.status == 200
    assert second.started_at - first.ended_at >= 0.5
