"""``python -m bench.bot_probe [--config PATH] run``: the product bot with timers on the path from a slash command to
the LLM request, for diagnosis only (``python -m bench.profile``). At exit it prints ``PROBE`` lines (which the
bench echoes): per step, how long it took (p50 / p99 / total seconds). Steps:

- ``gateway→handler``: the interaction's snowflake time (the stand-in's clock) to the command handler starting;
- ``handler→llm``: the handler starting to the provider's ``stream`` being called;
- ``store.<method>``: every awaited store call, wherever it happens (wall time, so waiting for aiosqlite's thread
  and the event loop counts: under load that is the point).
"""

from __future__ import annotations

import atexit
import contextvars
import functools
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

_handler_start: contextvars.ContextVar[float | None] = contextvars.ContextVar("handler_start", default=None)
_play = bot.discord_turn.play_turn


async def play_turn(interaction: discord.Interaction, events: Any, **kw: Any) -> Any:
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


if os.environ.get("BENCH_SWITCH_INTERVAL"):  # an experiment: how long aiosqlite's thread waits for the GIL
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if __name__ == "__main__":
    sys.exit(main())
