"""Stand-ins for the outside world that the unit layer needs: a scripted LLM provider and a fake sleep.

The scripted provider speaks the same ``bot.llm.base`` stream items the real providers yield, so the DM
service cannot tell it from a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from bot.llm.base import Finish, LLMRequest, ProviderError, StreamItem, TextChunk, Usage


@dataclass
class Gate:
    """A step that waits until the test opens it (to hold a stream in the middle)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.event.set()


def reply(text: str, *, input_tokens: int = 100, output_tokens: int = 20, chunks: int = 3) -> list:
    """A normal answer: the text in a few chunks, usage, and a finish."""
    size = max(1, -(-len(text) // chunks))
    parts = [TextChunk(text[i:i + size]) for i in range(0, len(text), size)]
    return [Usage(input_tokens=input_tokens), *parts, Usage(input_tokens, output_tokens), Finish("stop")]


def overloaded(retry_after: float | None = None) -> ProviderError:
    return ProviderError("overloaded", "Anthropic is overloaded (529)", retryable=True, status=529,
                         retry_after=retry_after)


def rate_limited(retry_after: float) -> ProviderError:
    return ProviderError("rate_limited", "rate limited (429)", retryable=True, status=429, retry_after=retry_after)


def bad_request() -> ProviderError:
    return ProviderError("bad_request", "the request was invalid (400)", retryable=False, status=400)


class ScriptedProvider:
    """Plays one script entry per call: a list of stream items, ``ProviderError``s to raise, ``Gate``s to wait
    on. With the script used up, it answers ``default``. Records every request and the concurrency seen."""

    name = "fake"

    def __init__(self, *script: list, default: Callable[[LLMRequest], list] | None = None,
                 model: str = "fake-model") -> None:
        self.model = model
        self.script = list(script)
        self.default = default or (lambda request: reply("The DM answers."))
        self.requests: list[LLMRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        steps = self.script.pop(0) if self.script else self.default(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for step in steps:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, Gate):
                    await step.event.wait()
                    continue
                await asyncio.sleep(0)
                yield step
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


class FakeSleep:
    """Records the waits the retry policy asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)
