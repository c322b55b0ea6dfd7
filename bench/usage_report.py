"""``python -m bench.usage_report [--calls N]``: how long /usage's queries take on a big month of the ledger.

One server, 20 channels, 50 players; every action is a player turn, a roll turn and a DM turn with one billed
call (so ``--calls 100000`` is 300,000 turns). Prints the time of each store query /usage makes, and the whole
report through ``ServerAdmin.usage``, on a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from bot.config import Config
from bot.dm.admin import MonthWindow, ServerAdmin
from bot.store.sqlite import SQLiteStore


async def fill(store: SQLiteStore, calls: int, month: MonthWindow) -> None:
    rng = random.Random(1)
    channels = 20
    turns, usage = [], []
    seq = [0] * channels
    for i in range(calls):
        c = i % channels
        when = month.start + (month.now - month.start) * i / calls
        player = f"p{rng.randrange(50)}"
        for role, author in (("player", player), ("roll", player), ("dm", None)):
            seq[c] += 1
            turns.append((len(turns) + 1, c + 1, seq[c], role, author, author and author.upper(), "x",
                          "complete", when))
        usage.append((c + 1, len(turns), "fake", "m", 900, 120, 0, 0, 0.004, when))

    async def write(tx) -> None:
        await tx.executemany("INSERT INTO sessions (id, guild_id, channel_id, started_by_id, started_by_name, premise,"
                             " status, created_at) VALUES (?, 'g', ?, 'p0', 'P0', '', 'active', ?)",
                             [(c + 1, f"c{c}", month.start) for c in range(channels)])
        await tx.executemany("INSERT INTO turns (id, session_id, seq, role, author_id, author_name, content, status,"
                             " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", turns)
        await tx.executemany("INSERT INTO usage (session_id, turn_id, provider, model, input_tokens, output_tokens,"
                             " cache_read_tokens, cache_write_tokens, cost_usd, created_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", usage)
    await store._transaction(write)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    month = MonthWindow.of(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "dm.db"))
        await store.open()
        try:
            began = time.perf_counter()
            await fill(store, args.calls, month)
            print(f"filled {args.calls:,} calls ({3 * args.calls:,} turns) in {time.perf_counter() - began:.1f} s")
            span = ("g", month.start, month.end)
            for name in ("guild_usage_total", "guild_usage_by_channel", "guild_usage_by_player", "guild_usage_daily"):
                began = time.perf_counter()
                await getattr(store, name)(*span)
                print(f"{name:24} {1000 * (time.perf_counter() - began):8.1f} ms")
            admin = ServerAdmin(Config(), store, tools=True)
            began = time.perf_counter()
            report = await admin.usage("g", can_manage_server=True)
            print(f"{'whole /usage report':24} {1000 * (time.perf_counter() - began):8.1f} ms "
                  f"({report.total.tokens:,} tokens, {len(report.by_player)} players shown)")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
