"""Figures 1, 2 and 5: how soon narration shows, how edits are paced, and the usual design for comparison.

A *phase* keeps N channels streaming at once: each channel plays /act, waits until the answer is final,
pauses for a short "thinking" time and acts again, until the phase ends. Channels start staggered over one
answer's length, so that after this ramp about N answers are streaming at any moment; only turns invoked after
the ramp count.

Per turn, with the LLM server's log of the reply (when each text event left it, and how much text it carried
so far) and the stand-in's log of the edits (when each was answered, and its content):
- first visible text = first edit carrying the reply's marker (its first token) − first text event sent;
- lag = for each text event, the first edit showing at least that much text − the event's send time (so a
  lag sample is "how long a piece of narration waited before players could read it");
- edits per message = edits (and sends) of the turn's message(s) that Discord accepted;
- stream end → final text = the first edit showing all of the reply (the last words) − the LLM's last event
  sent; stream end → final edit = the edit without the cursor (sent once the turn is stored) − the same;
- command → LLM request = the LLM server receiving the turn's request − the stand-in dispatching the command.
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from dataclasses import dataclass, field

from bench.discord_env import CURSOR, Env, Turn, environment
from bench.llm_server import Pace
from bench.stats import CpuMeter, LoopLag, mean, percentile

THINK = (0.2, 0.8)  # seconds a player "thinks" between the answer and the next action


@dataclass
class PhaseResult:
    channels: int
    turns: list[Turn]
    first_visible: list[float] = field(default_factory=list)  # seconds
    lag: list[float] = field(default_factory=list)  # seconds ("staleness": how far behind the reader is)
    final_delay: list[float] = field(default_factory=list)  # seconds from the LLM's last event to the last words shown
    final_edit: list[float] = field(default_factory=list)  # seconds from the LLM's last event to the cursor-free edit
    to_llm: list[float] = field(default_factory=list)  # seconds from the command to the LLM request
    edits: list[int] = field(default_factory=list)
    ratelimited: int = 0
    failed: int = 0
    missing: int = 0  # turns whose first visible text could not be matched
    bench_cpu: float = 0.0  # share of one core the bench process used (stand-in + LLM server + driver)
    bot_cpu: float = 0.0  # share of one core the bot process used
    bench_lag: list[float] = field(default_factory=list)  # this process's event-loop lag samples (seconds)

    def p(self, which: str, q: float) -> float:
        return percentile(getattr(self, which), q) * 1000


def answer_seconds(pace: Pace) -> float:
    return pace.ttft_seconds + pace.reply_tokens / pace.tokens_per_second


async def phase(env: Env, channels: list[int], pace: Pace, *, duration: float, timeout: float = 45.0) -> PhaseResult:
    """Keep len(channels) channels streaming for ``duration`` seconds after the ramp; analyse the turns."""
    env.llm.pace = pace
    ramp = answer_seconds(pace) if len(channels) > 1 else 0.0
    start = time.monotonic()
    counted_from, end = start + ramp, start + ramp + duration
    limited_before = env.ratelimited()
    meter, bot_cpu = CpuMeter(), env.bot.cpu_seconds()
    played: list[Turn] = []

    async def loop(i: int, channel_id: int) -> None:
        await asyncio.sleep(ramp * i / len(channels))
        n = 0
        while time.monotonic() < end:
            turn = await env.command("act", channel_id)
            played.append(turn)
            try:
                await env.wait(turn, timeout)
            except TimeoutError:  # counted as failed (and this channel stops playing), not the end of the bench
                turn.failed = f"no final answer within {timeout:.0f} s"
                print(f"  note: {turn.failed}: {describe(env, turn)}", file=sys.stderr, flush=True)
                return
            n += 1
            lo, hi = THINK
            await asyncio.sleep(lo + (hi - lo) * (zlib.crc32(f"{channel_id}/{n}".encode()) % 1000) / 1000)

    with LoopLag() as lag:
        await asyncio.gather(*(loop(i, c) for i, c in enumerate(channels)))
    result = PhaseResult(len(channels), [t for t in played if counted_from <= t.invoked_at < end])
    result.ratelimited = env.ratelimited() - limited_before
    result.bench_cpu = meter.share()
    result.bench_lag = lag.samples
    result.bot_cpu = (env.bot.cpu_seconds() - bot_cpu) / (time.monotonic() - start)
    analyse(env, result)
    return result


def describe(env: Env, turn: Turn) -> str:
    log = env.llm.logs.get(turn.marker)
    sent = "no LLM request" if log is None else f"LLM sent {len(log.events)} events, done={log.done_at is not None}"
    last = turn.edits[-1][1][-40:] if turn.edits else None
    return f"{turn.marker} in channel {turn.channel_id}: {sent}; {len(turn.edits)} edits, last {last!r}"


def visible_chars(content: str) -> int:
    return len(content) - len(" " + CURSOR) if content.endswith(CURSOR) else len(content)


def analyse(env: Env, result: PhaseResult) -> None:
    for turn in result.turns:
        log = env.llm.logs.get(turn.marker)
        if turn.failed:
            result.failed += 1
        if log is not None:
            result.to_llm.append(log.received_at - turn.invoked_at)
        if log is None or log.first_text_at is None or turn.first_visible_at is None:
            result.missing += 1
            continue
        if log.done_at is not None and turn.done_at is not None and not turn.failed:
            result.final_edit.append(turn.done_at - log.done_at)
        result.first_visible.append(turn.first_visible_at - log.first_text_at)
        result.edits.append(len(turn.edits))
        shown = [(t, visible_chars(c)) for t, c in turn.edits]
        j = 0
        for sent_at, chars in log.events:
            while j < len(shown) and shown[j][1] < chars:
                j += 1
            if j == len(shown):
                break  # never shown (a failed turn): not a lag sample
            result.lag.append(max(0.0, shown[j][0] - sent_at))
        else:
            if log.events and not turn.failed:  # every event was shown: when the last one was
                result.final_delay.append(max(0.0, shown[j][0] - log.events[-1][0]))


async def start_sessions(env: Env, channels: list[int]) -> None:
    saved, env.llm.pace = env.llm.pace, Pace(tokens_per_second=0, reply_tokens=60)
    await env.play_all("start", channels, concurrency=50)
    env.llm.pace = saved


def paced(reply_tokens: int = 300) -> Pace:
    """The paced LLM of figures 1, 2 and 5: 0.3 s to the first token, 60 tokens/s, 3 tokens per event."""
    return Pace(tokens_per_second=60.0, ttft_seconds=0.3, reply_tokens=reply_tokens, tokens_per_event=3)


async def first_visible_runs(counts: list[int], *, duration: float, module: str = "bot",
                             short_single: bool = True) -> dict[int, PhaseResult]:
    """Figure 1 (and figure 5 with module="bench.bot_baseline"): one bot process, phases of growing size."""
    results: dict[int, PhaseResult] = {}
    async with environment(channels=max(counts), module=module, edit_interval=1.0) as env:
        await start_sessions(env, env.channels[:max(counts)])
        for n in counts:
            # A lone channel gets short answers, so that the phase gathers more than a handful of turns.
            pace = paced(60) if n == 1 and short_single else paced()
            results[n] = await phase(env, env.channels[:n], pace, duration=duration)
            await asyncio.sleep(1.0)
    return results


async def pacing_sweep(intervals: list[float], *, channels: int, duration: float) -> dict[float, PhaseResult]:
    """Figure 2: the same load at several edit intervals, against a stand-in that enforces Discord-like buckets
    and sends no rate-limit headers (so discord.py cannot pace itself: every 429 is our pacing's doing)."""
    results: dict[float, PhaseResult] = {}
    for interval in intervals:
        async with environment(channels=channels, edit_interval=interval, ratelimit_headers=False) as env:
            await start_sessions(env, env.channels)
            results[interval] = await phase(env, env.channels, paced(), duration=duration)
    return results


def summary(r: PhaseResult) -> str:
    return (f"{r.channels} ch: {len(r.turns)} turns, first visible p50 {r.p('first_visible', 50):.1f} ms "
            f"p99 {r.p('first_visible', 99):.1f} ms, lag p50 {r.p('lag', 50):.0f} ms p99 {r.p('lag', 99):.0f} ms, "
            f"edits/msg {mean(r.edits):.1f}, 429s {r.ratelimited}, failed {r.failed}, unmatched {r.missing}, "
            f"bench cpu {r.bench_cpu:.0%} (loop lag p99 {r.p('bench_lag', 99):.0f} ms), bot cpu {r.bot_cpu:.0%}")
