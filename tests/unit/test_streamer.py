"""MessageStreamer against a recording fake sink and a virtual clock: what the user finally sees, and when."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.discord_stream import MessageStreamer
from bot.message_sink import MissingAccess, RateLimitedError, SinkError, TokenExpired

CURSOR = " ▌"
T0 = 1000.0


class FakeClock:
    """Virtual time. ``run(coro)`` drives a scenario like trio's autojump clock: whenever every task is blocked,
    time jumps to the earliest sleeper. Nothing real ever sleeps, so long streams take milliseconds."""

    def __init__(self, start: float = T0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def _settle(self) -> None:
        # Idle = after we yield, nothing else became ready (private but stable CPython attribute).
        loop = asyncio.get_running_loop()
        for _ in range(100_000):
            await asyncio.sleep(0)
            if not loop._ready:  # type: ignore[attr-defined]
                return
        raise AssertionError("event loop never settles")

    async def run(self, coro, *, max_time: float = 100_000.0):
        task = asyncio.ensure_future(coro)
        while True:
            await self._settle()
            if task.done():
                return task.result()
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                task.cancel()
                raise AssertionError("deadlock: everything waits and no one sleeps")
            when, _, fut = heapq.heappop(self._sleepers)
            assert when - T0 < max_time, "virtual time ran away"
            self._now = max(self._now, when)
            fut.set_result(None)


@dataclass
class Call:
    t: float
    op: str
    ref: int | None
    content: str | None


@dataclass
class FakeMsg:
    id: int
    webhook: bool
    content: str | None  # None: the original, still "thinking…"
    deleted: bool = False


@dataclass
class FakeSink:
    """Records every call with its virtual time; models what the channel shows. ``token_dies_at``: webhook calls
    from then on raise TokenExpired. ``errors``: op -> exceptions raised by that op's next calls, in order."""

    clock: FakeClock
    limit: int = 2000
    latency: float = 0.0
    token_dies_at: float | None = None
    channel_forbidden: bool = False
    calls: list[Call] = field(default_factory=list)
    msgs: list[FakeMsg] = field(default_factory=list)
    ephemeral: list[str] = field(default_factory=list)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.msgs.append(FakeMsg(0, True, None))

    async def _enter(self, op: str, ref: int | None, content: str | None, webhook: bool) -> None:
        self.calls.append(Call(self.clock.now(), op, ref, content))
        if content is not None and (len(content) > self.limit or not content.strip()):
            self.violations.append(f"{op}: bad content {content!r}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await self.clock.sleep(self.latency)
            if webhook and self.token_dies_at is not None and self.clock.now() >= self.token_dies_at:
                raise TokenExpired("invalid webhook token", status=401, code=50027)
            if op == "send_channel" and self.channel_forbidden:
                raise MissingAccess("missing access", status=403, code=50001)
            if self.errors.get(op):
                raise self.errors[op].pop(0)
        finally:
            self.in_flight -= 1

    def _live(self, ref: int) -> FakeMsg:
        m = self.msgs[ref]
        if m.deleted:
            self.violations.append(f"call on deleted message {ref}")
        return m

    async def edit_original(self, content: str) -> None:
        await self._enter("edit_original", 0, content, True)
        self._live(0).content = content

    async def send_followup(self, content: str) -> int:
        await self._enter("send_followup", None, content, True)
        self.msgs.append(FakeMsg(len(self.msgs), True, content))
        return len(self.msgs) - 1

    async def send_channel(self, content: str) -> int:
        await self._enter("send_channel", None, content, False)
        self.msgs.append(FakeMsg(len(self.msgs), False, content))
        return len(self.msgs) - 1

    async def edit(self, ref: int, content: str) -> None:
        await self._enter("edit", ref, content, self.msgs[ref].webhook)
        self._live(ref).content = content

    async def delete(self, ref: int | None) -> None:
        await self._enter("delete", ref, None, self.msgs[ref or 0].webhook)
        self._live(ref or 0).deleted = True

    async def send_ephemeral(self, content: str) -> None:
        await self._enter("send_ephemeral", None, content, True)
        self.ephemeral.append(content)

    def visible(self) -> list[str]:
        """What the channel shows at the end, top to bottom."""
        return [m.content if m.content is not None else "<thinking>" for m in self.msgs if not m.deleted]

    def edits_of(self, ref: int) -> list[Call]:
        return [c for c in self.calls if c.ref == ref and c.op in ("edit_original", "edit")]


def make(limit: int = 2000, **kw) -> tuple[FakeClock, FakeSink, MessageStreamer]:
    clock = FakeClock()
    sink = FakeSink(clock, limit=limit, **{k: kw.pop(k) for k in ("latency", "token_dies_at") if k in kw})
    return clock, sink, MessageStreamer(sink, clock=clock, limit=limit, cursor=CURSOR, **kw)


async def stream(clock: FakeClock, s: MessageStreamer, deltas: list[str], every: float) -> None:
    for d in deltas:
        s.feed(d)
        await clock.sleep(every)


# ----- what "nothing lost, nothing duplicated" means across split messages -----
def fence_state(text: str, upto: int) -> tuple[bool, str]:
    """Like Discord: every ``` toggles; an opening fence's language is a short tag directly followed by \\n."""
    inside, lang, i = False, "", 0
    while (q := text.find("```", i, upto)) != -1:
        i = q + 3
        if not inside:
            m = re.match(r"([A-Za-z0-9_+\-.#]{0,20})\n", text[i:])
            lang = m.group(1) if m else ""
        inside = not inside
    return inside, lang


def reconstructs(messages: list[str], text: str) -> bool:
    """True if text == w0 + p0 + w1 + p1 + ... + pk + wk, where each w is whitespace only (Discord trims messages,
    so whitespace at a split may move or vanish) and p_i is message i stripped of the fence markers the
    streamer must add: where text is inside a code block at a split, message i ends with ``` and message i+1
    starts with ```lang\\n (the same language). Tries both readings where a ``` could be original or added."""

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        return pos

    def go(i: int, pos: int) -> bool:
        pos = skip(pos)
        if i == len(messages):
            return pos == len(text)
        body, last = messages[i], i == len(messages) - 1
        inside, lang = fence_state(text, pos)
        if i > 0 and inside:
            if not body.startswith(f"```{lang}\n"):
                return False
            body = body[len(f"```{lang}\n"):]
        readings = ([(body[:-3], True)] if not last and body.endswith("```") else []) + [(body, False)]
        for piece, added_close in readings:
            piece = piece.strip()
            if not text.startswith(piece, pos):
                continue
            end_inside = fence_state(text, pos + len(piece))[0]
            if (added_close and not end_inside) or (not added_close and not last and end_inside):
                continue
            if go(i + 1, pos + len(piece)):
                return True
        return False

    return go(0, 0)


def check_final(sink: FakeSink, text: str, limit: int) -> None:
    assert sink.violations == []
    shown = sink.visible()
    assert all(len(m) <= limit and m.strip() and CURSOR.strip() not in m for m in shown), shown
    assert reconstructs(shown, text), shown


# ----- first text, pacing, coalescing, cursor -----
async def test_first_delta_is_shown_at_once() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        await clock.sleep(2.5)  # the model took a while to start
        s.feed("The tavern")
        await clock.sleep(5)
        await s.finish()

    await clock.run(scenario())
    first = sink.calls[0]
    assert (first.op, first.t, first.content) == ("edit_original", T0 + 2.5, "The tavern" + CURSOR)
    assert s.first_edit_at == T0 + 2.5
    assert sink.visible() == ["The tavern"]


async def test_a_status_note_explains_a_wait_and_vanishes_with_new_text() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        s.status("⏳ the provider is slow; trying again (2/3)…")  # before any text: the "thinking…" explains itself
        await clock.sleep(2)
        s.feed("The bridge holds.")
        await clock.sleep(2)
        s.status("⏳ trying again (3/3)…")
        await clock.sleep(2)
        await s.finish()

    await clock.run(scenario())
    shown = [c.content for c in sink.calls]
    assert shown[0].endswith("\n-# ⏳ the provider is slow; trying again (2/3)…" + CURSOR)
    assert "The bridge holds." + CURSOR in shown and "-# " not in shown[1]
    assert any(c == "The bridge holds.\n-# ⏳ trying again (3/3)…" + CURSOR for c in shown)
    assert sink.visible() == ["The bridge holds."]  # the final message carries no note


async def test_thirty_second_stream_gets_about_thirty_edits() -> None:
    clock, sink, s = make(edit_interval=1.0)
    deltas = ["ab "] * 600  # one delta every 50 ms for 30 s (1800 chars: one message)

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.05)
        await s.finish()

    await clock.run(scenario())
    edits = sink.edits_of(0)
    assert 29 <= len(edits) <= 32
    assert all(b.t - a.t >= 1.0 - 1e-9 for a, b in itertools.pairwise(edits))
    assert all(e.content.endswith(CURSOR) for e in edits[:-1])  # cursor while writing
    assert sink.visible() == ["".join(deltas).strip()]  # ... and gone at the end
    assert s.edit_count == len(edits)


async def test_deltas_between_edits_are_coalesced_not_queued() -> None:
    clock, sink, s = make(edit_interval=1.0)

    async def scenario() -> None:
        s.feed("A")
        await clock.sleep(0.1)
        for d in "BCDE":
            s.feed(d)
            await clock.sleep(0.1)
        await clock.sleep(3)
        await s.finish()

    await clock.run(scenario())
    assert [(round(c.t - T0, 6), c.content) for c in sink.calls] == [
        (0.0, "A" + CURSOR), (1.0, "ABCDE" + CURSOR), (3.5, "ABCDE")]


async def test_two_streamers_pace_themselves_only() -> None:
    clock = FakeClock()
    slow, fast = FakeSink(clock, latency=0.9), FakeSink(clock)
    a = MessageStreamer(slow, clock=clock, edit_interval=1.0)
    b = MessageStreamer(fast, clock=clock, edit_interval=1.0)
    deltas = [f"w{i} " for i in range(200)]

    async def scenario() -> None:
        await asyncio.gather(stream(clock, a, deltas, 0.05), stream(clock, b, deltas, 0.05))
        await asyncio.gather(a.finish(), b.finish())

    await clock.run(scenario())
    # each alone would make ~10 edits in 10 s: the other streamer (or its slow Discord) costs nothing
    assert 10 <= len(fast.edits_of(0)) <= 12 and 10 <= len(slow.edits_of(0)) <= 12
    assert fast.visible() == slow.visible() == ["".join(deltas).strip()]
    assert slow.max_in_flight == 1


async def test_slow_discord_one_call_at_a_time_and_nothing_lost() -> None:
    clock, sink, s = make(latency=2.5)  # every call takes 2.5 s (discord.py sleeping on 429s)
    deltas = [f"{i} " for i in range(100)]

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.1)
        await s.finish()

    await clock.run(scenario())
    assert sink.max_in_flight == 1
    assert len(sink.calls) <= 6
    assert sink.visible() == ["".join(deltas).strip()]


async def test_finish_without_text_shows_a_placeholder() -> None:
    clock, sink, s = make()
    await clock.run(s.finish())
    assert sink.visible() == ["…"]


# ----- splitting -----
def para(n: int, word: str = "lorem") -> str:
    return " ".join([word] * n) + "."


async def run_text(text: str, limit: int = 2000, chunk: int = 37, **kw) -> FakeSink:
    clock, sink, s = make(limit=limit, **kw)

    async def scenario() -> None:
        await stream(clock, s, [text[i:i + chunk] for i in range(0, len(text), chunk)], 0.05)
        await s.finish()

    await clock.run(scenario())
    check_final(sink, text, limit)
    assert s.text == text
    return sink


async def test_split_prefers_paragraph_boundary() -> None:
    paragraph = "\n".join(para(20) for _ in range(3))  # three lines, ~365 chars
    shown = (await run_text("\n\n".join([paragraph] * 10))).visible()
    assert shown == ["\n\n".join([paragraph] * 5)] * 2  # not cut at the later line breaks


async def test_split_prefers_sentence_then_word_then_hard() -> None:
    sentences = " ".join(para(9, "ab") for _ in range(100))  # no paragraph or line breaks
    shown = (await run_text(sentences)).visible()
    assert len(shown) >= 2 and all(m.endswith(".") for m in shown)

    words = " ".join(["word"] * 900)  # no sentence ends
    shown = (await run_text(words)).visible()
    assert len(shown) >= 2 and all(m.endswith("word") and len(m) > 1900 for m in shown[:-1])

    blob = "x" * 5000  # nothing to break at
    shown = (await run_text(blob)).visible()
    assert "".join(shown) == blob and all(len(m) > 1950 for m in shown[:-1])


async def test_split_inside_code_block_closes_and_reopens_with_language() -> None:
    code = "\n".join(f"    print({i})  # {'x' * 20}" for i in range(120))
    text = "Here is the spell:\n```python\n" + code + "\n```\nDone."
    shown = (await run_text(text)).visible()
    assert len(shown) >= 3
    assert shown[0].startswith("Here is") and shown[0].endswith("\n```")
    for m in shown[1:]:
        assert m.startswith("```python\n    print(")
    assert all(m.endswith("```") for m in shown[:-1])
    assert shown[-1].endswith("```\nDone.")


async def test_messages_are_sent_in_order_each_finished_before_the_next() -> None:
    sink = await run_text(" ".join(["word"] * 1500), chunk=500)
    ops = [(c.op, c.ref) for c in sink.calls]
    first_send = ops.index(("send_followup", None))
    assert sink.calls[first_send - 1].op == "edit_original"
    assert CURSOR not in sink.calls[first_send - 1].content
    assert [c.op for c in sink.calls if c.op.startswith("send")] == ["send_followup"] * (len(sink.visible()) - 1)


PIECES = ["word", "Zz", " ", "  ", "\n", "\n\n", ".", "! ", "`", "``", "```", "```py\n", "```\n", "é", "x" * 25,
          "\t", "#", "lorem ipsum dolor ", "....", "\n```\n"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=120),
    cuts=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    limit=st.sampled_from([60, 90, 2000]),
    gap=st.sampled_from([0.0, 0.3, 1.7]),
)
def test_any_text_in_any_chunking_is_shown_whole_in_order(parts, cuts, limit, gap) -> None:
    text = "".join(parts) + "end"

    async def main() -> FakeSink:
        clock, sink, s = make(limit=limit)
        chunks, i = [], 0
        for c in itertools.cycle(cuts):
            if i >= len(text):
                break
            chunks.append(text[i:i + c])
            i += c

        async def scenario() -> None:
            await stream(clock, s, chunks, gap)
            await s.finish()

        await clock.run(scenario())
        return sink

    sink = asyncio.run(main())
    check_final(sink, text, limit)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("feed"), st.sampled_from(PIECES)),
    st.tuples(st.just("sleep"), st.sampled_from([0.1, 0.6, 2.0])),
    st.tuples(st.sampled_from(["checkpoint", "reset"]), st.none())), min_size=1, max_size=80),
    latency=st.sampled_from([0.0, 0.4, 2.0]), hiccups=st.booleans())
def test_resets_and_checkpoints_leave_exactly_the_kept_text(ops, latency, hiccups) -> None:
    """Also with a slow Discord (resets land while calls are in flight) and refused calls."""

    async def main() -> tuple[FakeSink, str]:
        clock, sink, s = make(limit=60, latency=latency)
        if hiccups:
            sink.errors["edit"] = [RateLimitedError("429", retry_after=1.5), SinkError("503", status=503)]
            sink.errors["edit_original"] = [SinkError("502", status=502)]

        async def scenario() -> None:
            for op, arg in ops:
                if op == "feed":
                    s.feed(arg)
                elif op == "sleep":
                    await clock.sleep(arg)
                else:
                    getattr(s, op)()
            s.feed("end")
            await s.finish()

        await clock.run(scenario())
        return sink, s.text

    sink, text = asyncio.run(main())
    check_final(sink, text, 60)


# ----- reset -----
async def test_reset_within_one_message_keeps_checkpointed_text() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        s.feed("🎲 Goblin rolls 15.\n")
        s.checkpoint()
        s.feed("The goblin swings and")
        await clock.sleep(1.5)
        s.reset()  # the provider failed mid-answer; the DM service retries
        await clock.sleep(1.5)
        s.feed("The goblin misses.")
        await s.finish()

    await clock.run(scenario())
    assert s.text == "🎲 Goblin rolls 15.\nThe goblin misses."
    assert sink.visible() == [s.text]
    after_reset = [c.content for c in sink.calls if c.t >= T0 + 1.5]
    assert after_reset[0] == "🎲 Goblin rolls 15.\n" + CURSOR  # edited back before the retry's text arrives
    assert not any("swings" in c for c in after_reset)


async def test_reset_across_a_split_deletes_followups_of_dropped_text() -> None:
    clock, sink, s = make()
    kept = para(150)  # ~900 chars

    async def scenario() -> None:
        s.feed(kept + "\n\n")
        s.checkpoint()
        await stream(clock, s, [para(40) + "\n\n" for _ in range(12)], 0.5)  # ~3000 more: 2 follow-ups
        assert sum(1 for m in sink.msgs if not m.deleted) >= 2
        s.reset()
        await clock.sleep(3)
        s.feed("Retry.")
        await s.finish()

    await clock.run(scenario())
    assert sink.visible() == [kept + "\n\nRetry."]
    assert [c.ref for c in sink.calls if c.op == "delete"] == [m.id for m in sink.msgs[1:]]


async def test_reset_exactly_at_a_split_reopens_the_message_before_it() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        s.feed("A" * 1000 + "\n\n")
        s.checkpoint()
        s.feed("B" * 1500)  # split right at the checkpoint: the follow-up holds only B's
        await clock.sleep(2)
        s.reset()
        await clock.sleep(2)
        s.feed("C" * 10)
        await s.finish()

    await clock.run(scenario())
    assert sink.visible() == ["A" * 1000 + "\n\n" + "C" * 10]


async def test_reset_while_the_followup_is_being_sent_deletes_it_once_sent() -> None:
    clock, sink, s = make(latency=1.0)

    async def scenario() -> None:
        s.feed(" ".join(["old"] * 700))  # two messages; each call takes 1 s
        await clock.sleep(1.5)  # the follow-up's send is in flight now
        s.reset()
        s.feed("Retry.")
        await s.finish()

    await clock.run(scenario())
    assert [c.op for c in sink.calls[:2]] == ["edit_original", "send_followup"]
    assert sink.visible() == ["Retry."] and sink.violations == []


async def test_reset_during_an_edit_then_token_death_continues_from_the_kept_text() -> None:
    clock, sink, s = make(latency=1.0, token_dies_at=T0 + 1.5)

    async def scenario() -> None:
        s.feed("Keep. ")
        s.checkpoint()
        s.feed("dropped words")  # shown by the edit in flight from 0 to 1 s
        await clock.sleep(0.5)
        s.reset()
        s.feed("New text that is longer")
        await clock.sleep(3)
        await s.finish()

    await clock.run(scenario())
    # The dead token leaves the old edit in place; the continuation must not skip any of the new text.
    assert sink.visible() == ["Keep. dropped words" + CURSOR, "New text that is longer"]


# ----- failures -----
async def test_fail_after_text_ends_the_answer_visibly() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        await stream(clock, s, ["The dragon ", "opens its maw"], 0.3)
        await s.fail("the model provider is unavailable")

    await clock.run(scenario())
    note = "*⚠️ The DM was interrupted: the model provider is unavailable*"
    assert sink.visible() == ["The dragon opens its maw\n\n" + note]
    assert s.text == "The dragon opens its maw"


async def test_fail_note_goes_to_a_new_message_when_the_current_is_full() -> None:
    text = "y" * 1990
    clock, sink, s = make()

    async def scenario() -> None:
        s.feed(text)
        await clock.sleep(2)
        await s.fail("timeout")

    await clock.run(scenario())
    assert sink.visible() == [text, "*⚠️ The DM was interrupted: timeout*"]
    check_final(sink, text + "\n\n*⚠️ The DM was interrupted: timeout*", 2000)


async def test_fail_before_any_text_is_private() -> None:
    clock, sink, s = make()
    await clock.run(s.fail("Slow down: next turn in 12 s."))
    assert [c.op for c in sink.calls] == ["delete", "send_ephemeral"]  # delete first: see _refuse
    assert sink.visible() == [] and sink.ephemeral == ["Slow down: next turn in 12 s."]


async def test_fail_after_only_a_status_note_is_still_private() -> None:
    clock, sink, s = make()

    async def scenario() -> None:
        s.status("⏳ trying again (2/3)…")
        await clock.sleep(1)
        await s.fail("The AI provider is not answering right now.")

    await clock.run(scenario())
    assert [c.op for c in sink.calls] == ["edit_original", "delete", "send_ephemeral"]
    assert sink.ephemeral == ["The AI provider is not answering right now."]


# ----- the 15-minute token -----
def channel_ops(sink: FakeSink) -> list[Call]:
    return [c for c in sink.calls if c.op == "send_channel" or (c.op == "edit" and not sink.msgs[c.ref].webhook)]


async def test_token_deadline_by_clock_continues_in_a_channel_message() -> None:
    clock, sink, s = make(token_expires_at=T0 + 10.0)
    deltas = [f"w{i} " for i in range(200)]

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.1)  # 20 s
        await s.finish()

    await clock.run(scenario())
    webhook_calls = [c for c in sink.calls if c.op in ("edit_original", "send_followup")]
    assert max(c.t for c in webhook_calls) == T0 + 10.0  # the closing edit, at the deadline
    assert CURSOR not in sink.msgs[0].content
    assert channel_ops(sink)[0].op == "send_channel" and len(sink.visible()) == 2
    assert s.expired
    check_final(sink, "".join(deltas), 2000)


async def test_token_deadline_while_idle_still_removes_the_cursor() -> None:
    clock, sink, s = make(token_expires_at=T0 + 10.0)

    async def scenario() -> None:
        s.feed("The storm")
        await clock.sleep(60)  # the model stalls past the deadline
        s.feed(" passes.")
        await clock.sleep(0.5)
        await s.finish()

    await clock.run(scenario())
    assert [(c.t - T0, c.op, c.content) for c in sink.calls] == [
        (0.0, "edit_original", "The storm" + CURSOR), (10.0, "edit_original", "The storm"),
        (60.0, "send_channel", "passes." + CURSOR), (60.5, "edit", "passes.")]  # the last words at once
    assert sink.visible() == ["The storm", "passes."]


async def test_token_expired_error_mid_stream_loses_and_duplicates_nothing() -> None:
    clock, sink, s = make(token_dies_at=T0 + 7.3)  # Discord says the token is dead before our deadline
    deltas = [f"w{i} " for i in range(1000)]  # ~4900 chars; ~3500 of them before the token dies

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.01)
        await s.finish()

    await clock.run(scenario())
    assert s.expired and sink.violations == []
    shown = sink.visible()
    assert len(shown) >= 3 and sink.msgs[1].webhook and not sink.msgs[-1].webhook  # follow-up, then channel
    # The message the token died on keeps its cursor (nothing can edit it now); the rest is whole and once.
    assert reconstructs([m.removesuffix(CURSOR) for m in shown], "".join(deltas)), shown
    # One refused webhook call, then none: each would count towards Discord's invalid-request limit.
    dead = [c for c in sink.calls if c.t >= T0 + 7.3 and (c.op in ("edit_original", "send_followup")
                                                         or (c.op == "edit" and sink.msgs[c.ref].webhook))]
    assert len(dead) == 1


async def test_a_fence_marker_still_arriving_is_not_shown_so_a_dying_token_cannot_break_it() -> None:
    clock, sink, s = make(token_dies_at=T0 + 1.2)

    async def scenario() -> None:
        s.feed("Read the scroll: ``")
        await clock.sleep(1.5)
        s.feed("`py\nspell = 'fire'\n```")
        await clock.sleep(1.5)
        await s.finish()

    await clock.run(scenario())
    assert sink.visible() == ["Read the scroll: " + CURSOR, "```py\nspell = 'fire'\n```"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=120), dies=st.floats(0.0, 15.0),
       by_clock=st.booleans())
def test_token_death_at_any_moment_loses_and_duplicates_nothing(parts, dies, by_clock) -> None:
    text = "".join(parts) + "end"

    async def main() -> FakeSink:
        death = {"token_expires_at": T0 + dies} if by_clock else {"token_dies_at": T0 + dies}
        clock, sink, s = make(limit=90, **death)

        async def scenario() -> None:
            await stream(clock, s, [text[i:i + 7] for i in range(0, len(text), 7)], 0.1)
            await s.finish()

        await clock.run(scenario())
        return sink

    sink = asyncio.run(main())
    assert sink.violations == []
    shown = sink.visible()
    if by_clock:  # the closing edit before the deadline took the cursor off
        assert all(CURSOR.strip() not in m for m in shown) and "<thinking>" not in shown
    elif shown[0] == "<thinking>":  # the token died before the first edit: nothing could replace it
        shown = shown[1:]
    # A dead token can leave its last message with the cursor (and the fence we close while writing).
    shown = [m.replace(CURSOR, "") for m in shown]
    # If no text followed the frozen message, the fence it closed for the continuation stays closed.
    assert reconstructs(shown, text) or reconstructs(shown[:-1] + [shown[-1].removesuffix("```")], text), shown


async def test_missing_access_in_channel_is_reported_not_retried() -> None:
    clock, sink, s = make(token_expires_at=T0 + 5.0)
    sink.channel_forbidden = True

    async def scenario() -> None:
        await stream(clock, s, [f"w{i} " for i in range(100)], 0.1)
        await s.finish()

    await clock.run(scenario())
    assert len([c for c in sink.calls if c.op == "send_channel"]) == 1
    assert s.blocked_reason and "missing access" in s.blocked_reason


# ----- rate limits and other errors -----
async def test_rate_limited_edit_waits_and_then_carries_everything() -> None:
    clock, sink, s = make()
    sink.errors["edit_original"] = [RateLimitedError("429", retry_after=4.0)]
    deltas = [f"w{i} " for i in range(50)]

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.1)
        await s.finish()

    await clock.run(scenario())
    times = [c.t - T0 for c in sink.calls]
    assert times[:2] == [0.0, 4.0]  # the refused first edit, then the retry after retry_after
    assert sink.visible() == ["".join(deltas).strip()]


async def test_transient_errors_are_retried_with_backoff() -> None:
    clock, sink, s = make(edit_interval=0.1)
    sink.errors["edit_original"] = [SinkError("502", status=502), SinkError("502", status=502)]

    async def scenario() -> None:
        s.feed("Hello")
        await s.finish()

    await clock.run(scenario())
    assert [round(c.t - T0, 6) for c in sink.calls] == [0.0, 0.5, 1.5]  # backoff 0.5 s, then 1 s
    assert sink.visible() == ["Hello"]


async def test_persistent_errors_never_raise_and_stop_calling() -> None:
    clock, sink, s = make()
    sink.errors["edit_original"] = [SinkError("400", status=400)] * 50
    sink.errors["send_followup"] = [SinkError("500", status=500)] * 50

    async def scenario() -> None:
        await stream(clock, s, [f"w{i} " for i in range(100)], 0.1)
        await s.finish()
        s.feed("late")  # ignored, must not raise

    await clock.run(scenario())
    assert s.blocked_reason is not None and len(sink.calls) < 30


# ----- the discord.py adapter, against a stub Interaction -----
def http_error(cls, status: int, code: int, headers: dict[str, str] | None = None):
    import discord
    from types import SimpleNamespace

    response = SimpleNamespace(status=status, reason="x", headers=headers or {})
    return getattr(discord, cls)(response, {"code": code, "message": "m"})


def test_discord_errors_map_to_what_the_streamer_acts_on() -> None:
    import aiohttp
    import discord

    from bot.discord_sink import map_error

    assert isinstance(map_error(http_error("HTTPException", 401, 50027), webhook=True), TokenExpired)
    assert isinstance(map_error(http_error("NotFound", 404, 10015), webhook=True), TokenExpired)
    assert isinstance(map_error(http_error("NotFound", 404, 10008), webhook=True), TokenExpired)
    gone = map_error(http_error("NotFound", 404, 10008), webhook=False)  # a channel message someone deleted
    assert type(gone) is SinkError and (gone.status, gone.code, gone.retryable) == (404, 10008, False)
    assert isinstance(map_error(http_error("Forbidden", 403, 50013), webhook=False), MissingAccess)
    limited = map_error(http_error("HTTPException", 429, 0, {"Retry-After": "2.5"}), webhook=True)
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 2.5
    assert map_error(discord.RateLimited(40.0), webhook=False).retry_after == 40.0
    assert map_error(http_error("DiscordServerError", 503, 0), webhook=True).retryable
    assert map_error(aiohttp.ClientConnectionError("reset"), webhook=True).retryable


async def test_interaction_sink_calls_discord_py_without_pings() -> None:
    import datetime
    from types import SimpleNamespace

    import discord

    from bot.discord_sink import InteractionSink, token_deadline

    calls: list[tuple[str, tuple, dict]] = []

    def rec(name, result=None, exc=None):
        async def f(*a, **kw):
            calls.append((name, a, kw))
            if exc:
                raise exc
            return result
        return f

    message = SimpleNamespace(edit=rec("msg.edit"), delete=rec("msg.delete"))
    interaction = SimpleNamespace(
        edit_original_response=rec("edit_original_response"),
        delete_original_response=rec("delete_original_response", exc=http_error("HTTPException", 401, 50027)),
        followup=SimpleNamespace(send=rec("followup.send", message)),
        channel=SimpleNamespace(send=rec("channel.send", exc=http_error("Forbidden", 403, 50001))),
        created_at=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5),
    )
    sink = InteractionSink(interaction)  # type: ignore[arg-type]
    await sink.edit_original("a")
    ref = await sink.send_followup("b")
    await sink.edit(ref, "c")
    await sink.send_ephemeral("d")
    with pytest.raises(TokenExpired):
        await sink.delete(None)
    with pytest.raises(MissingAccess):
        await sink.send_channel("e")
    assert [c[0] for c in calls] == ["edit_original_response", "followup.send", "msg.edit", "followup.send",
                                     "delete_original_response", "channel.send"]
    assert calls[1][2]["wait"] is True and calls[3][2]["ephemeral"] is True
    for name, _, kw in calls:
        if name != "delete_original_response":
            m = kw["allowed_mentions"]
            assert isinstance(m, discord.AllowedMentions) and m.to_dict() == discord.AllowedMentions.none().to_dict()
    clock = FakeClock()
    assert abs(token_deadline(interaction, clock, margin=30.0) - (T0 + 600 - 30)) < 2  # type: ignore[arg-type]
