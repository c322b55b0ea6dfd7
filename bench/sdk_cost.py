"""``python -m bench.sdk_cost --provider anthropic --base-url URL --calls N``: the CPU one streamed LLM call costs
through the real SDK client alone (request building, HTTP, SSE parsing, event objects) and our provider
adapter, with no Discord, store or DM service. Figure 3 subtracts it from the bot's CPU per turn to show what
the rest (ours and discord.py) costs. Prints one JSON line.

The request has the shape of an /act turn right after /start: the system prompt, the dice tool, the opening
request, one DM answer and the player's action.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bot.config import DMConfig
from bot.dm.prompts import ROLL_DICE, opening_request, player_line, system_prompt
from bot.llm import make_provider
from bot.llm.base import Finish, LLMRequest, Message
from bench.discord_env import MODEL
from bench.llm_server import reply_tokens


def sample_request(marker: str) -> LLMRequest:
    return LLMRequest(
        system=system_prompt(DMConfig(), tools=True),
        messages=(Message("user", opening_request("aria", "a heist in a floating city BENCH-000001")),
                  Message("assistant", "".join(reply_tokens("BENCH-000001", 300))),
                  Message("user", player_line("aria", f"I search the room, carefully {marker}"))),
        max_tokens=1024, temperature=0.8, tools=(ROLL_DICE,))


async def run(provider_name: str, base_url: str, calls: int, concurrency: int, warmup: int) -> dict[str, float]:
    provider = make_provider(provider_name, MODEL[provider_name], api_key=None, base_url=base_url,
                             timeout_seconds=60)
    counter = iter(range(10**9))

    async def one() -> None:
        async for item in provider.stream(sample_request(f"BENCH-sdk{next(counter)}")):
            if isinstance(item, Finish):
                pass

    async def batch(n: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def gated() -> None:
            async with gate:
                await one()

        await asyncio.gather(*(gated() for _ in range(n)))

    try:
        await batch(warmup)
        cpu, wall = time.process_time(), time.monotonic()
        await batch(calls)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await provider.aclose()
    return {"calls": calls, "cpu_seconds": cpu, "wall_seconds": wall, "cpu_per_call": cpu / calls}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", default="anthropic")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.provider, args.base_url, args.calls, args.concurrency, args.warmup))))


if __name__ == "__main__":
    main()
