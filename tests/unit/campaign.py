"""A scripted campaign for the memory tests: a provider that narrates and also writes the running summaries.

The summarizer is honest in the way the real prompt asks: its KEY FACTS are the previous log's facts plus every
"FACT: …" sentence of the turns it was given, nothing else. So a fact reaches the DM late in a campaign only if
the whole pipeline (fold after the step, storage, the next fold reading the previous summary, the request
carrying the summary) works.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from bot.dm.memory.summary import FACTS_HEADING, STORY_HEADING
from bot.llm.base import Finish, LLMRequest, ProviderError, StreamItem, TextChunk, Usage
from bot.store.base import Channel, Player

HALL = Channel("g1", "hall")
ARIA = Player("u1", "Aria")
BRAM = Player("u2", "Bram")
OPENING = "Rain hammers the docks of Vell. FACT: the innkeeper of the Drowned Lantern is Oswin Harrowgate."


def is_summary(request: LLMRequest) -> bool:
    return request.system.startswith("You keep the campaign log")


def text_of(request: LLMRequest) -> str:
    return "\n".join([request.system, *(m.text for m in request.messages), request.volatile])


class CampaignProvider:
    """Narration: the opening above, then "The DM answers action N." Summaries: facts carried over and collected.
    ``failures`` are raised, one per call, by the next summary calls (``narration_failures`` likewise)."""

    name = "fake"

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[LLMRequest] = []
        self.failures: list[ProviderError] = []
        self.narration_failures: list[ProviderError] = []

    @property
    def narration(self) -> list[LLMRequest]:
        return [r for r in self.requests if not is_summary(r)]

    @property
    def summaries(self) -> list[LLMRequest]:
        return [r for r in self.requests if is_summary(r)]

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        if is_summary(request):
            if self.failures:
                raise self.failures.pop(0)
            text = self._summarize(request.messages[0].text)
        else:
            if self.narration_failures:
                raise self.narration_failures.pop(0)
            last = request.messages[-1].text
            found = re.findall(r"action (\d+)", last)
            text = f"The DM answers action {found[-1]}." if found else OPENING
        yield Usage(input_tokens=len(text_of(request)) // 4)
        yield TextChunk(text)
        yield Usage(len(text_of(request)) // 4, len(text) // 4)
        yield Finish("stop")

    @staticmethod
    def _summarize(prompt: str) -> str:
        log = prompt.split("THE LOG SO FAR:\n", 1)[1].split("\n\nTHE NEXT TURNS:\n", 1)[0]
        turns = prompt.split("THE NEXT TURNS:\n", 1)[1]
        facts = [line for line in log.splitlines() if line.startswith("- ")]
        for fact in re.findall(r"FACT: ([^.]*)\.", turns):
            if f"- {fact}" not in facts:
                facts.append(f"- {fact}")
        count = len(re.findall(r"^(?:Aria|Bram|DM): ", turns, flags=re.MULTILINE))
        return f"{FACTS_HEADING}\n" + "\n".join(facts) + f"\n{STORY_HEADING}\nThe party played {count} more turns."

    async def aclose(self) -> None:
        pass
