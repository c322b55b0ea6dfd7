"""``python -m bench.store_turns [--turns N] [--channels C]``: what a DM turn costs the store, on SQLite and on
PostgreSQL, with and without the token hold (reserve before the call, settle after).

Each turn is the store's part of a real one: (reserve,) begin_turn, complete_turn with one call and one DM roll,
(settle). C channels play at once in one process; the figures are turns per second and the p50/p99 of one turn's
store time. PostgreSQL is ``$DM_TEST_POSTGRES_URL`` (default 127.0.0.1:5432, database ``test`` used only to
create and drop a scratch database)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bot.llm.base import Usage
from bot.store import store_for
from bot.store.base import CallRecord, Channel, Player, Reservation, RollRecord, TokenCap

SERVER = os.environ.get("DM_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
ARIA = Player("u1", "Aria")
CALL = CallRecord("anthropic", "claude-sonnet-5-5", Usage(1200, 250, 800, 0), 0.004)
ROLL = RollRecord(Player("dm", "The DM"), "1d20+5", 17, "1d20 (12) + 5 = `17`", "attack", "The DM rolled 17", True)


async def play(url: str, turns: int, channels: int, hold: bool) -> tuple[float, list[float]]:
    store = store_for(url)
    await store.open()
    sessions = [await store.start_session(Channel("g1", f"c{uuid.uuid4().hex[:6]}"), ARIA, "p")
                for _ in range(channels)]
    durations: list[float] = []

    async def channel(session) -> None:
        for k in range(turns):
            start = time.perf_counter()
            held = None
            if hold:
                caps = [TokenCap("adventure", 10**12), TokenCap("player_day", 0, "player:u1:2026-12-01", 0.0),
                        TokenCap("server_month", 0, "guild:g1:2026-12", 0.0)]
                held = await store.reserve_tokens(session.id, 3000, caps, now=time.time())
                assert isinstance(held, Reservation)
            turn = await store.begin_turn(session.id, ARIA, f"action {k}")
            await store.complete_turn(session.id, turn, f"answer {k}", [CALL], [ROLL])
            if held is not None:
                await store.settle_reservation(held, CALL.usage.total)
            durations.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(channel(s) for s in sessions))
    elapsed = time.perf_counter() - began
    await store.close()
    return turns * channels / elapsed, durations


async def main(turns: int, channels: int) -> None:
    import asyncpg

    name = f"dm_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(SERVER)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    pg_url = SERVER.partition("?")[0].rpartition("/")[0] + f"/{name}"
    print(f"{'backend':<11} {'hold':<5} {'channels':>8} {'turns/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for backend, url in (("sqlite", f"sqlite:///{Path(tmp) / 'b.db'}"), ("postgresql", pg_url)):
                for c in (1, channels):
                    for hold in (False, True):
                        rate, durations = await play(url, turns, c, hold)
                        q = statistics.quantiles(durations, n=100)
                        print(f"{backend:<11} {str(hold).lower():<5} {c:>8} {rate:>8.0f} {q[49] * 1000:>7.2f} "
                              f"{q[98] * 1000:>7.2f}")
    finally:
        conn = await asyncpg.connect(SERVER)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns per channel")
    parser.add_argument("--channels", type=int, default=20, help="channels playing at once in the second row")
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.channels))
