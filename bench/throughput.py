"""Figure 3: throughput and overhead, with an instant LLM (the whole answer is written at once).

One bot process with 1000 channels (plus the warm-up channel):
1. /start in the first 100 channels (warms the allocator and every code path), then the RSS after 3 s idle;
2. /start in the other 900 channels, 50 at a time: turns per second and CPU per turn of opening turns; then
   the RSS after 3 s idle. RSS per idle session = (RSS now − RSS after step 1) / 900 (the open sessions sit in
   the store; what the process keeps per session in memory is what this shows);
3. /act across the 1000 channels for a fixed time, ``concurrency`` answers in flight: turns per second and CPU
   per turn; peak RSS (the kernel's high-water mark) at the end.
CPU per turn = the bot process's CPU time (user + system) / turns. "Excluding SDK parsing" subtracts the CPU
one streamed call costs through the SDK client alone, measured in its own process (``bench.sdk_cost``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass

from bench.discord_env import Env, environment
from bench.llm_server import Pace
from bench.stats import CpuMeter

INSTANT = Pace(tokens_per_second=0, ttft_seconds=0, reply_tokens=300, tokens_per_event=3)


@dataclass
class Throughput:
    turns: int
    wall: float
    bot_cpu: float
    bench_cpu: float
    failed: int

    @property
    def per_second(self) -> float:
        return self.turns / self.wall

    @property
    def cpu_per_turn(self) -> float:
        return self.bot_cpu / self.turns


async def closed_loop(env: Env, channels: list[int], *, concurrency: int, duration: float) -> Throughput:
    """/act with ``concurrency`` turns in flight (each in its own channel) for ``duration`` seconds."""
    next_channel = iter(channels * 1000)
    end = time.monotonic() + duration
    turns = failed = 0
    cpu0, wall0, meter = env.bot.cpu_seconds(), time.monotonic(), CpuMeter()

    async def worker() -> None:
        nonlocal turns, failed
        while time.monotonic() < end:
            turn = await env.play("act", next(next_channel))
            turns += 1
            failed += turn.failed is not None

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Throughput(turns, time.monotonic() - wall0, env.bot.cpu_seconds() - cpu0, meter.share(), failed)


async def batch(env: Env, name: str, channels: list[int], *, concurrency: int) -> Throughput:
    cpu0, wall0, meter = env.bot.cpu_seconds(), time.monotonic(), CpuMeter()
    turns = await env.play_all(name, channels, concurrency=concurrency)
    return Throughput(len(turns), time.monotonic() - wall0, env.bot.cpu_seconds() - cpu0, meter.share(),
                      sum(t.failed is not None for t in turns))


async def sdk_cpu_per_call(base_url: str, provider: str, calls: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sdk_cost", "--provider", provider, "--base-url", base_url,
        "--calls", str(calls), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bench.sdk_cost failed: {err.decode()[-1000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])["cpu_per_call"]


@dataclass
class Fig3:
    starts: Throughput
    acts: Throughput
    rss_warm: int
    rss_sessions: int
    sessions: int
    peak_rss: int
    sdk_cpu_per_call: float

    @property
    def rss_per_session(self) -> float:
        return (self.rss_sessions - self.rss_warm) / self.sessions


async def run(*, sessions: int = 1000, warm: int = 100, concurrency: int = 50, duration: float = 20.0,
              sdk_calls: int = 300, provider: str = "anthropic") -> Fig3:
    async with environment(channels=sessions, pace=INSTANT, provider=provider) as env:
        env.llm.pace = INSTANT
        await env.play_all("start", env.channels[:warm], concurrency=concurrency)
        await asyncio.sleep(3)
        rss_warm = env.bot.rss()
        starts = await batch(env, "start", env.channels[warm:], concurrency=concurrency)
        await asyncio.sleep(3)
        rss_sessions = env.bot.rss()
        acts = await closed_loop(env, env.channels, concurrency=concurrency, duration=duration)
        peak = env.bot.peak_rss()
        sdk = await sdk_cpu_per_call(env.llm.url_for(provider), provider, sdk_calls)
    return Fig3(starts, acts, rss_warm, rss_sessions, len(env.channels) - warm, peak, sdk)
