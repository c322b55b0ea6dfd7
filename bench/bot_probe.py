"""``python -m bench.bot_probe [--config PATH] run``: the product bot with timers on the path from a slash command to
the LLM request, for diagnosis only (``python -m bench.profile``). At exit it prints ``PROBE`` lines (which the
bench echoes): per step, how long it took (p50 / p99 / total seconds). Steps:

- ``gateway→handler``: the interaction's snowflake time (the stand-in's clock) to the command handler starting;
- ``handler→llm``: the handler starting to the provider's ``stream`` being called;
- ``store.<method>``: every awaited store call, wherever it happens (wall time, so waiting for the write lock,
  aiosqlite's thread and the event loop counts: under load that is the point).

``BENCH_ONE_JOB_WRITES=1``: complete_turn runs as one job on aiosqlite's thread (an experiment for the store's
owner), with the time its SQL takes inside the thread, to tell waiting from working.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import importlib
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


for _name in ("active_session", "count_turns", "turns", "usage_totals", "begin_turn", "complete_turn", "start_session"):
    setattr(bot.store.sqlite.SQLiteStore, _name, _timed(f"store.{_name}", getattr(bot.store.sqlite.SQLiteStore, _name)))

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


async def _one_job_complete_turn(self: Any, session_id: int, player_turn_id: int | None, dm_text: str,
                                 calls: list[Any], rolls: list[Any]) -> int:
    """An experiment for the store's owner (not the product): complete_turn as ONE job on aiosqlite's thread, so
    the write lock is held for one round trip instead of five. The SQL is the store's own."""
    if rolls:
        return await _complete_turn(self, session_id, player_turn_id, dm_text, calls, rolls)
    now = time.time()

    def run(conn: Any) -> int:
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        SAMPLES["sqlite BEGIN IMMEDIATE (in the thread)"].append(time.perf_counter() - t)
        try:
            if player_turn_id is not None:
                conn.execute("UPDATE turns SET status = 'complete' WHERE id = ?", (player_turn_id,))
            dm = conn.execute(
                "INSERT INTO turns (session_id, seq, role, author_id, author_name, content, status, created_at)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?), 'dm', NULL, NULL, ?,"
                " 'complete', ?)", (session_id, session_id, dm_text, now)).lastrowid
            conn.executemany(
                "INSERT INTO usage (session_id, turn_id, provider, model, input_tokens, output_tokens,"
                " cache_read_tokens, cache_write_tokens, cost_usd, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(session_id, dm, c.provider, c.model, c.usage.input_tokens, c.usage.output_tokens,
                  c.usage.cache_read_tokens, c.usage.cache_write_tokens, c.cost_usd, now) for c in calls])
            c = time.perf_counter()
            conn.execute("COMMIT")
            SAMPLES["sqlite COMMIT (in the thread)"].append(time.perf_counter() - c)
            SAMPLES["complete_turn job body (in the thread)"].append(time.perf_counter() - t)
            return dm
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async with self._write_lock:
        return await self.db._execute(run, self.db._conn)


_complete_turn = bot.store.sqlite.SQLiteStore.complete_turn
if os.environ.get("BENCH_ONE_JOB_WRITES"):
    bot.store.sqlite.SQLiteStore.complete_turn = _timed("store.complete_turn", _one_job_complete_turn)
if os.environ.get("BENCH_SWITCH_INTERVAL"):  # an experiment: how long aiosqlite's thread waits for the GIL
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if __name__ == "__main__":
    sys.exit(main())
