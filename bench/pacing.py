"""Figure 1: streaming at Discord's pace (issue 13). The product's streamer, paced by the rate-limit buckets Discord
reports, beside two others swapped into the same bot, on the same load, in one run:

- *naive*: one edit per ``edit_interval_seconds`` per message and the final edit at once, no bucket state
  (``bench.bot_naive``);
- *global*: one 1-second throttle shared by every channel, llmcord's design (``bench.bot_baseline``).

Load: 250-word answers (≈ 1 token a word) at 30 words/s after 0.3 s, 3 words per SSE event, at 50 and then 200
channels streaming at once, on the stand-in's Discord-like buckets (5 requests per 2 s per interaction token,
5 per 5 s per channel, 50/s global) with rate-limit headers on; then the product again with the headers off
(its fallback pace, ``edit_interval_seconds`` = 1).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from bench.discord_env import environment
from bench.llm_server import Pace
from bench.streaming import PhaseResult, phase, start_sessions, summary

STREAMERS = {"ours": "bot", "naive": "bench.bot_naive", "global": "bench.bot_baseline"}


def workload() -> Pace:
    return Pace(tokens_per_second=30.0, ttft_seconds=0.3, reply_tokens=250, tokens_per_event=3)


@dataclass
class Run:
    who: str  # ours / naive / global
    headers: bool
    phases: dict[int, PhaseResult]


async def one_bot(who: str, counts: list[int], *, headers: bool, duration: float) -> Run:
    phases: dict[int, PhaseResult] = {}
    async with environment(channels=max(counts), module=STREAMERS[who], edit_interval=1.0,
                           ratelimit_headers=headers) as env:
        await start_sessions(env, env.channels[:max(counts)])
        for n in counts:
            phases[n] = await phase(env, env.channels[:n], workload(), duration=duration)
            print(f"  {who:6} headers {'on ' if headers else 'off'} " + summary(phases[n])
                  + f", final text p50 {phases[n].p('final_delay', 50):.0f} ms p99 {phases[n].p('final_delay', 99):.0f}"
                  f" ms, final edit p99 {phases[n].p('final_edit', 99):.0f} ms, command→LLM p50 {phases[n].p('to_llm', 50):.0f} ms p99 {phases[n].p('to_llm', 99):.0f} ms",
                  file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)
    return Run(who, headers, phases)


async def run(counts: list[int], *, duration: float) -> list[Run]:
    """``BENCH_STREAMERS=ours`` runs the product's streamer only (e.g. to measure an older version of the bot)."""
    chosen = [w for w in os.environ.get("BENCH_STREAMERS", ",".join(STREAMERS)).split(",") if w in STREAMERS]
    runs = [await one_bot(who, counts, headers=True, duration=duration) for who in chosen]
    runs.append(await one_bot("ours", counts, headers=False, duration=duration))
    return runs
