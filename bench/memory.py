"""Figure 7: campaign memory — input tokens per turn over a scripted 200-turn campaign, three ways.

- ours: the shipped configuration: running summary (folded after each window step), pinned facts, the window
  of 20 actions and answers stepping by 10, every request within ``max_prompt_tokens``;
- round 1: the plain window of round 1 (the last ``history_messages`` turns, rolls included, stepping by half),
  nothing older: the DM forgets the start of the campaign;
- everything: every turn of the campaign in every request (what a bot that "remembers" naively sends).
All three drive the real ``DMService`` on a temporary SQLite file. The provider is the product's Anthropic
request shaping (``AnthropicProvider.request_params``: system block and last-message cache breakpoints, the
volatile block after them) billed by the prompt-cache simulation of figure 4 (``bench.prompt_cache``), in
process, so the 600 turns take seconds. The summary calls go through the same simulation (they send no cache
breakpoints). Token counts: 4 characters a token (``bench.prompt_cache.count_tokens``).
The campaign: figure 4's actions and /rolls; a DM answer of 120–280 words; a fact pinned at turn 20; summaries
written by a scripted summarizer that keeps a line per named thing it was given, up to ``summary_max_tokens``.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic

from bench.cost import PLAYERS, TABLE, actions
from bench.prompt_cache import PromptCache, count_tokens
from bot.config import Config
from bot.dm.history import build_messages, window_start
from bot.dm.memory.summary import FACTS_HEADING, STORY_HEADING
from bot.dm.service import DMService
from bot.llm import PLACEHOLDER_API_KEY
from bot.llm.anthropic_provider import AnthropicProvider
from bot.llm.base import Finish, LLMRequest, StreamItem, TextChunk, Usage
from bot.store.sqlite import SQLiteStore

TURNS = 200
SHOWN_AT = (10, 50, 100, 200)
MODEL = "claude-sonnet-5-5"
WORDS = ("lantern", "harbour", "shadow", "silver", "whisper", "bridge", "captain", "ledger", "storm", "vault",
         "market", "tower", "rumour", "dagger", "coin", "mist", "chapel", "tide", "guard", "map")
NAMES = ("Oswin", "Mara", "the Tidewarden", "Captain Sel", "Old Brannoc", "the Gilded Eel", "Vell", "Quarry Row")


def is_summary(request: LLMRequest) -> bool:
    return request.system.startswith("You keep the campaign log")


@dataclass
class Run:
    name: str
    per_turn: list[int] = field(default_factory=list)  # narration input tokens (raw), one per turn
    billed: list[float] = field(default_factory=list)  # the same, billed with caching
    cache_read: int = 0
    narration_tokens: int = 0  # input + output of narration calls
    summary_tokens: int = 0  # input + output of summary calls
    summaries: int = 0

    @property
    def raw_input(self) -> int:
        return sum(self.per_turn)

    @property
    def summary_share(self) -> float:
        total = self.narration_tokens + self.summary_tokens
        return self.summary_tokens / total if total else 0.0


class SimulatedAnthropic:
    """The product's Anthropic request body, billed by the prompt-cache simulation; scripted answers."""

    name = "anthropic"

    def __init__(self, run: Run, seed: int = 11) -> None:
        client = anthropic.AsyncAnthropic(api_key=PLACEHOLDER_API_KEY, base_url="http://127.0.0.1:9", max_retries=0)
        self.shaper = AnthropicProvider(client, MODEL)
        self.model = MODEL
        self.cache = PromptCache()
        self.run = run
        self.rng = random.Random(seed)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        body = self.shaper.request_params(request)
        usage = self.cache.usage(body)
        summary = is_summary(request)
        text = self._summary(request) if summary else self._narration()
        out = count_tokens(text)
        if summary:
            self.run.summary_tokens += usage.total + out
            self.run.summaries += 1
        else:
            self.run.per_turn.append(usage.total)
            self.run.billed.append(usage.billed)
            self.run.cache_read += usage.cache_read_input_tokens
            self.run.narration_tokens += usage.total + out
        yield Usage(usage.input_tokens, 0, usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
        yield TextChunk(text)
        yield Usage(usage.input_tokens, out, usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
        yield Finish("stop")

    def _narration(self) -> str:
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(120, 280))]
        words[3] = self.rng.choice(NAMES)
        return " ".join(words).capitalize() + ". What do you do?"

    def _summary(self, request: LLMRequest) -> str:
        """Facts: the previous ones, plus one per name met in the new turns, within the length bound."""
        prompt = request.messages[0].text
        log = prompt.split("THE LOG SO FAR:\n", 1)[1].split("\n\nTHE NEXT TURNS:\n", 1)[0]
        facts = [line for line in log.splitlines() if line.startswith("- ")]
        for name in NAMES:
            if name in prompt.split("THE NEXT TURNS:", 1)[1]:
                facts.append(f"- {name}: {' '.join(self.rng.choice(WORDS) for _ in range(10))}")
        prose = " ".join(self.rng.choice(WORDS) for _ in range(120))
        budget = request.max_tokens * 4 - len(prose) - 40
        kept, size = [], 0
        for fact in reversed(facts):  # the newest facts first, within the bound
            if size + len(fact) > budget:
                break
            kept.insert(0, fact)
            size += len(fact) + 1
        return f"{FACTS_HEADING}\n" + "\n".join(kept) + f"\n{STORY_HEADING}\n{prose}."

    async def aclose(self) -> None:
        await self.shaper.aclose()


def _config(variant: str) -> Config:
    config = Config()
    limits = dataclasses.replace(config.limits, requests_per_minute=100_000, tokens_per_session=10**10)
    memory, dm = config.memory, config.dm
    if variant != "ours":
        memory = dataclasses.replace(memory, summaries=False, max_prompt_tokens=10**9)
    if variant == "everything":
        dm = dataclasses.replace(dm, history_messages=10**6)
    return dataclasses.replace(config, limits=limits, memory=memory, dm=dm)


def _round1_requests(service: DMService) -> None:
    """Round 1's request builder: the last ``history_messages`` turns (rolls included), nothing else."""

    async def request(session, extra, *, volatile="", system=None, tools=None, story=None):  # round 1 read its own
        store, size = service.store, service.config.dm.history_messages
        total = await store.count_turns(session.id)
        start = window_start(total + len(extra), size)
        turns = await store.turns(session.id, offset=start) if start < total else []
        turns += extra[max(0, start - total):]
        return LLMRequest(system or service.system, tuple(build_messages(session, turns, omitted=start > 0)),
                          service.config.llm.max_output_tokens, service.config.llm.temperature,
                          service.tools if tools is None else tools, volatile=volatile)

    service.memory.request = request  # type: ignore[method-assign]


async def campaign(variant: str, turns: int = TURNS) -> Run:
    run = Run(variant)
    random.seed(2024)  # the dice engine's rolls (their lines' lengths): the same campaign every run
    provider = SimulatedAnthropic(run)
    with tempfile.TemporaryDirectory(prefix="dm-bench-memory-") as tmp:
        store = SQLiteStore(str(Path(tmp) / "memory.db"))
        await store.open()
        service = DMService(_config(variant), store, provider)
        if variant == "round 1":
            _round1_requests(service)
        script = actions()
        try:
            for n in range(turns):
                if n == 0:
                    stream = service.start(TABLE, PLAYERS[0], "a heist in a floating city")
                else:
                    if n % 4 == 0:
                        await service.roll(TABLE, PLAYERS[(n // 4) % len(PLAYERS)], "1d20+3", reason="Perception")
                    if n == 20:
                        await service.memory.remember(TABLE, PLAYERS[1], "Oswin the innkeeper owes Bram 10 gold.")
                    player, action = next(script)
                    stream = service.act(TABLE, player, action)
                async for _ in stream:
                    pass
                await service.memory.settle()
        finally:
            await service.aclose()
            await provider.aclose()
            await store.close()
    return run


async def run(turns: int = TURNS) -> dict[str, Run]:
    return {variant: await campaign(variant, turns) for variant in ("ours", "round 1", "everything")}


def plot(runs: dict[str, Run], path: Path) -> str | None:
    """Tokens per turn against turn number; None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, r in runs.items():
        ax.plot(range(1, len(r.per_turn) + 1), r.per_turn, label=f"{name}: input tokens", linewidth=1.4)
    ours = runs["ours"]
    ax.plot(range(1, len(ours.billed) + 1), ours.billed, label="ours: billed with caching", linestyle="--",
            linewidth=1.2)
    ax.set_xlabel("turn")
    ax.set_ylabel("input tokens per turn")
    ax.set_yscale("log")
    ax.set_title(f"Input tokens per turn over a {len(ours.per_turn)}-turn campaign")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
