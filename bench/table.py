"""``python -m bench.table``: a table of players acting at once, batched against one-by-one.

A first action is being answered (the LLM writes ``words`` words at ``rate`` words/s) when five more players act,
one every 50 ms. Through the real DMService and a real SQLite file, with ``[dm] batch_actions`` on and off, it
measures the LLM calls made and how long after the burst's first action the last player's answer is complete.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bot.config import Config
from bot.dm.events import Done
from bot.dm.service import DMService
from bot.llm.base import Finish, LLMRequest, TextChunk, Usage
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore

TABLE = Channel("bench", "table")


class PacedProvider:
    """An LLM that writes ``words`` words at ``rate`` words a second."""

    name, model = "bench", "paced"

    def __init__(self, words: int, rate: float) -> None:
        self.words, self.rate, self.calls = words, rate, 0

    async def stream(self, request: LLMRequest):
        self.calls += 1
        yield Usage(input_tokens=500)
        for n in range(self.words):
            await asyncio.sleep(1 / self.rate)
            yield TextChunk(f"word{n} ")
        yield Usage(500, self.words * 2)
        yield Finish("stop")

    async def aclose(self) -> None:
        pass


async def one_run(batch: bool, words: int, rate: float, players: int = 5) -> tuple[int, float]:
    import dataclasses

    config = Config()
    config = dataclasses.replace(
        config, dm=dataclasses.replace(config.dm, batch_actions=batch),
        limits=dataclasses.replace(config.limits, max_queued_turns=players + 1, requests_per_minute=100))
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(str(Path(folder) / "bench.db"))
        await store.open()
        provider = PacedProvider(words, rate)
        service = DMService(config, store, provider)
        async for _ in service.start(TABLE, Player("p0", "Aria"), "a troll on the bridge"):
            pass
        provider.calls = 0

        async def act(n: int) -> float:
            async for event in service.act(TABLE, Player(f"p{n}", f"Player{n}"), f"I act ({n})"):
                if isinstance(event, Done):
                    return time.monotonic()
            return float("nan")

        first = asyncio.create_task(act(0))
        await asyncio.sleep(0.2)  # the first answer is streaming
        burst_at = time.monotonic()
        burst = []
        for n in range(1, players + 1):
            burst.append(asyncio.create_task(act(n)))
            await asyncio.sleep(0.05)
        ends = await asyncio.gather(first, *burst)
        await service.aclose()
        await store.close()
        return provider.calls, max(ends[1:]) - burst_at


async def compare(words: int, rate: float) -> dict[str, tuple[int, float]]:
    return {"batched": await one_run(True, words, rate), "one-by-one": await one_run(False, words, rate)}


def report(results: dict[str, tuple[int, float]], words: int, rate: float) -> str:
    lines = [f"A burst of 5 actions while the DM narrates ({words}-word answers at {rate:g} words/s):",
             f"  {'':12} {'LLM calls':>9} {'last player answered after':>28}"]
    for name, (calls, seconds) in results.items():
        lines.append(f"  {name:12} {calls:>9} {seconds:>26.2f} s")
    batched, single = results["batched"], results["one-by-one"]
    lines.append(f"  batched: {single[0] / batched[0]:.1f}x fewer calls, the last player answered "
                 f"{single[1] / batched[1]:.1f}x sooner")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=60, help="words per answer (default 60)")
    parser.add_argument("--rate", type=float, default=30.0, help="words per second the LLM writes (default 30)")
    args = parser.parse_args()
    print(report(asyncio.run(compare(args.words, args.rate)), args.words, args.rate))


if __name__ == "__main__":
    main()
