"""Figure 4: billed input tokens per turn over a scripted 100-turn campaign, ours against the naive baseline.

Both runs drive the real ``DMService`` (SQLite store in a temporary file) and the real Anthropic SDK client
against the local LLM server, whose prompt-cache simulation reports usage as Anthropic would
(``bench.prompt_cache``). No Discord is involved: the cost does not depend on it.
- ours: the shipped configuration: ``window_start`` (the window of ``history_messages`` = 20 turns moves in
  steps of 10) and the Anthropic provider's cache breakpoints (system block and last message);
- naive: the design we started from: ``sliding_window_start`` (the last 20 turns, moving by one each turn)
  and no ``cache_control`` at all (a bench-only provider subclass drops it).
The campaign: /start, then 99 player actions of 12–60 words; before every fourth action another player makes
a /roll (stored as a turn the DM sees next). DM answers are 120–280 tokens (about 150–250 words).
Billed input = input + 1.25 × cache writes + 0.1 × cache reads (Anthropic's multipliers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic

import bot.dm.memory.keeper
from bench.discord_env import MODEL
from bench.llm_server import LLMServer, Pace
from bench.prompt_cache import CACHE_READ_FACTOR, CACHE_WRITE_FACTOR
from bot.config import Config
from bot.dm.events import Failed, UsageReport
from bot.dm.history import sliding_window_start
from bot.dm.service import DMService
from bot.llm import PLACEHOLDER_API_KEY
from bot.llm.anthropic_provider import AnthropicProvider
from bot.llm.base import LLMRequest
from bot.store.base import Channel, Player
from bot.store.sqlite import SQLiteStore

TURNS = 100
TABLE = Channel("bench-guild", "bench-table")
PLAYERS = (Player("p1", "Aria"), Player("p2", "Bram"), Player("p3", "Cass"))
VERBS = ("search", "climb", "question", "sneak past", "bargain with", "inspect", "follow", "light", "open",
         "listen at", "distract", "sketch", "pocket", "test", "circle", "wake")
THINGS = ("the harbourmaster", "the rusted gate", "the smuggler's ledger", "the lantern", "the guard captain",
          "the cracked mural", "the rope bridge", "the sealed crate", "the old map", "the tide pool", "the bell tower",
          "the fortune teller", "the broken cart", "the chapel door", "the ferryman", "the vault lock")
FILL = ("carefully", "quietly", "while keeping an eye on the street", "and ask what happened here last night",
        "hoping nobody notices", "then signal the others", "and note anything unusual", "before the bell rings",
        "with my dagger ready", "and try to remember the old song about it")


@dataclass
class CampaignCost:
    turns: int = 0
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    failed: int = 0

    @property
    def raw_input(self) -> int:
        return self.input + self.cache_write + self.cache_read

    @property
    def billed(self) -> float:
        return self.input + CACHE_WRITE_FACTOR * self.cache_write + CACHE_READ_FACTOR * self.cache_read

    def per_turn(self, value: float) -> float:
        return value / self.turns if self.turns else float("nan")


class NoCacheAnthropicProvider(AnthropicProvider):
    """The naive baseline's provider: the product's request without any ``cache_control``."""

    def request_params(self, request: LLMRequest) -> dict[str, Any]:
        params = super().request_params(request)
        params["system"] = [_uncached(block) for block in params.get("system", [])]
        params["messages"] = [{**m, "content": [_uncached(b) for b in m["content"]]} for m in params["messages"]]
        return params


def _uncached(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def actions(seed: int = 7) -> Iterator[tuple[Player, str]]:
    rng = random.Random(seed)
    while True:
        words = [f"I {rng.choice(VERBS)} {rng.choice(THINGS)}"]
        while len(" ".join(words).split()) < rng.randint(12, 60):
            words.append(rng.choice(FILL))
        yield rng.choice(PLAYERS), ", ".join(words) + "."


@contextlib.contextmanager
def naive_history() -> Iterator[None]:
    """The last 20 actions and answers, moving by one each turn (the memory's window policy swapped out)."""
    saved = bot.dm.memory.keeper.window_start
    bot.dm.memory.keeper.window_start = sliding_window_start  # type: ignore[assignment]
    try:
        yield
    finally:
        bot.dm.memory.keeper.window_start = saved  # type: ignore[assignment]


async def campaign(llm: LLMServer, *, naive: bool, turns: int = TURNS) -> CampaignCost:
    llm.cache.clear()
    config = Config()
    config = dataclasses.replace(
        config,
        llm=dataclasses.replace(config.llm, provider="anthropic", model=MODEL["anthropic"], base_url=llm.anthropic_url),
        limits=dataclasses.replace(config.limits, requests_per_minute=10000, tokens_per_session=10**9),
        # figure 6 measures the running summary; here both sides are the plain window, as in round 1
        memory=dataclasses.replace(config.memory, summaries=False))
    client = anthropic.AsyncAnthropic(api_key=PLACEHOLDER_API_KEY, base_url=llm.anthropic_url, max_retries=0)
    provider = (NoCacheAnthropicProvider if naive else AnthropicProvider)(client, config.llm.model,
                                                                          base_url=llm.anthropic_url)
    cost = CampaignCost()
    with tempfile.TemporaryDirectory(prefix="dm-bench-cost-") as tmp, (naive_history() if naive else
                                                                       contextlib.nullcontext()):
        store = SQLiteStore(str(Path(tmp) / "cost.db"))
        await store.open()
        service = DMService(config, store, provider)
        script = actions()
        try:
            for n in range(turns):
                if n == 0:
                    stream = service.start(TABLE, PLAYERS[0], "a heist in a floating city")
                else:
                    if n % 4 == 0:
                        roller = PLAYERS[(n // 4) % len(PLAYERS)]
                        await service.roll(TABLE, roller, "1d20+3", reason="Perception")
                    player, action = next(script)
                    stream = service.act(TABLE, player, action)
                async for event in stream:
                    if isinstance(event, UsageReport):
                        u = event.usage
                        cost.input += u.input_tokens
                        cost.cache_write += u.cache_write_tokens
                        cost.cache_read += u.cache_read_tokens
                    elif isinstance(event, Failed):
                        cost.failed += 1
                cost.turns += 1
        finally:
            await provider.aclose()
            await store.close()
    return cost


async def run(turns: int = TURNS) -> tuple[CampaignCost, CampaignCost]:
    llm = await LLMServer(Pace(tokens_per_second=0, reply_tokens=200, vary=0.4)).start()
    try:
        ours = await campaign(llm, naive=False, turns=turns)
        naive = await campaign(llm, naive=True, turns=turns)
    finally:
        await llm.stop()
    return ours, naive
