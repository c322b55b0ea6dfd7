"""``python -m bench.bot_probe [--config PATH] run``: the product bot with timers on the path from a slash command to
the LLM request, for diagnosis only (``python -m bench.profile``). At exit it prints ``PROBE`` lines (which the
bench echoes): per step, how long it took (p50 / p99 / total seconds). Steps:

- ``gateway→handler``: the interaction's snowflake time (the stand-in's clock) to the command handler starting;
- ``handler→llm``: the handler starting to the provider's ``stream`` being called;
- ``store.<method>``: every awaited store call, wherever it happens (wall time, so waiting for aiosqlite's thread
  and the event loop counts: under load that is the point);
- ``turn.request`` and ``turn.hold``: the DM service building the request (the party, the memory, the server's
  prompt) and holding the turn's tokens;
- ``loop lag``: how late a 10 ms sleep in the bot wakes (how long a pass of the bot's event loop takes).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import gc
import importlib
import inspect
import os
import sys
import time
from collections import defaultdict
from typing import Any

import discord

import bot.discord_turn
import bot.store.sqlite
from bot.cli import main
from bot.dm.service import DMService
from bot.llm.anthropic_provider import AnthropicProvider

SAMPLES: dict[str, list[float]] = defaultdict(list)


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            SAMPLES[name].append(time.perf_counter() - t)
    return wrapper


for _name in dir(bot.store.sqlite.SQLiteStore):  # every public store method the bot awaits
    _method = getattr(bot.store.sqlite.SQLiteStore, _name)
    if not _name.startswith("_") and inspect.iscoroutinefunction(_method) and _name not in ("open", "close"):
        setattr(bot.store.sqlite.SQLiteStore, _name, _timed(f"store.{_name}", _method))

for _name in ("_request", "_hold"):
    setattr(DMService, _name, _timed(f"turn.{_name.strip('_')}", getattr(DMService, _name)))

_handler_start: contextvars.ContextVar[float | None] = contextvars.ContextVar("handler_start", default=None)
_play = bot.discord_turn.play_turn


_lag: list[asyncio.Task[None]] = []


async def _sample_lag() -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        SAMPLES["loop lag"].append(time.perf_counter() - t - 0.01)


async def play_turn(interaction: discord.Interaction, events: Any, **kw: Any) -> Any:
    if not _lag:
        if os.environ.get("BENCH_GC_FREEZE"):  # an experiment: what the bot holds once it is up is never collected
            gc.collect()
            gc.freeze()
        _lag.append(asyncio.get_running_loop().create_task(_sample_lag()))
    SAMPLES["gateway→handler"].append(time.time() - interaction.created_at.timestamp())
    _handler_start.set(time.perf_counter())  # the DM service runs in this task: it sees the value
    return await _play(interaction, events, **kw)


_stream = AnthropicProvider.stream


def stream(self: AnthropicProvider, request: Any) -> Any:
    start = _handler_start.get()
    if start is not None:
        SAMPLES["handler→llm"].append(time.perf_counter() - start)
        _handler_start.set(None)  # a retry or a tool round is not the first request
    return _stream(self, request)


AnthropicProvider.stream = stream  # type: ignore[method-assign]
bot.discord_turn.play_turn = play_turn
for _module in ("cogs.actions", "cogs.sessions"):
    importlib.import_module(_module).play_turn = play_turn  # type: ignore[attr-defined]


def _report() -> None:
    for name, values in sorted(SAMPLES.items()):
        values.sort()
        p = (lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000)
        print(f"PROBE {name}: n={len(values)} p50={p(0.5):.1f} ms p99={p(0.99):.1f} ms "
              f"total={sum(values):.2f} s", flush=True)


atexit.register(_report)


_gc_start: list[float] = [0.0]


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        SAMPLES[f"gc gen{info['generation']}"].append(time.perf_counter() - _gc_start[0])


gc.callbacks.append(_gc_timer)
if os.environ.get("BENCH_GC_THRESHOLD"):  # an experiment: "700,10,10" is Python's default
    gc.set_threshold(*(int(n) for n in os.environ["BENCH_GC_THRESHOLD"].split(",")))

if os.environ.get("BENCH_SWITCH_INTERVAL"):  # an experiment: how long aiosqlite's thread waits for the GIL
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if __name__ == "__main__":
    sys.exit(main())
