"""One LLM call as the DM service makes it: retried by the one ``RetryPolicy``, every attempt charged.

Charged means a ``CallRecord`` in ``calls`` for each attempt that cost something: the usage the provider
reported, or, for an attempt that streamed but never reported usage (many OpenAI-compatible servers send no
usage chunk; a stream cut before its last chunk has none either, though its input was billed), the bot's own
estimate, marked ``estimated``. A model that refuses ``temperature`` is asked again without it, and never sent
one again. Summaries and other background calls use the same class, so they are retried and charged alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from bot.dm.events import DMEvent, Reset, Retrying, TextDelta, UsageReport
from bot.dm.guards import RetryPolicy, estimate_tokens
from bot.llm.base import (
    Finish,
    LLMProvider,
    LLMRequest,
    ProviderError,
    TextChunk,
    ToolCall,
    Usage,
    refused_parameter,
)
from bot.llm.pricing import Price
from bot.store.base import CallRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CallResult:
    """What one LLM call produced (reset before each attempt)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str = "other"


class LLMCalls:
    def __init__(self, provider: LLMProvider, retry: RetryPolicy, price: Price | None) -> None:
        self.provider, self.retry, self.price = provider, retry, price
        self.no_temperature = False  # the model refused `temperature` once: never send it again

    def prepared(self, request: LLMRequest) -> LLMRequest:
        return replace(request, temperature=None) if self.no_temperature and request.temperature is not None \
            else request

    async def call(self, request: LLMRequest, result: CallResult, calls: list[CallRecord]) -> AsyncIterator[DMEvent]:
        """Stream one call's events into ``result``; raises ``ProviderError`` once the retries are spent."""
        request = self.prepared(request)
        try:
            async with aclosing(self._attempts(request, result, calls)) as events:
                async for event in events:
                    yield event
        except ProviderError as error:
            if request.temperature is None or not refused_parameter(error, "temperature"):
                raise
            log.warning("%s refuses the temperature parameter; calling it without one from now on (%s)",
                        self.provider.model, error.detail)
            self.no_temperature = True
            if result.text:
                yield Reset()
            async with aclosing(self._attempts(self.prepared(request), result, calls)) as events:
                async for event in events:
                    yield event

    async def _attempts(self, request: LLMRequest, result: CallResult, calls: list[CallRecord]) -> AsyncIterator[DMEvent]:
        async for attempt in self.retry.retrying():
            with attempt:
                if result.text:
                    yield Reset()  # the attempt before showed text; the new one starts over
                result.text, result.tool_calls, result.finish = "", [], "other"
                usage: Usage | None = None
                received = False
                record: CallRecord | None = None
                try:
                    async with aclosing(self.provider.stream(request)) as items:  # closed even if we stop early
                        async for item in items:
                            received = True
                            if isinstance(item, TextChunk):
                                result.text += item.text
                                yield TextDelta(item.text)
                            elif isinstance(item, ToolCall):
                                result.tool_calls.append(item)
                            elif isinstance(item, Usage):
                                usage = item
                            elif isinstance(item, Finish):
                                result.finish = item.reason
                except ProviderError as error:
                    number = attempt.retry_state.attempt_number
                    if self.retry.will_retry(error, number):
                        yield Retrying(number + 1, self.retry.config.attempts, error.message)
                    raise
                finally:
                    if usage is not None:
                        record = self.record(usage)
                    elif received:
                        record = self.record(self._estimated_usage(request, result), estimated=True)
                    if record is not None:
                        calls.append(record)
                if record is not None:
                    yield UsageReport(record.usage, record.cost_usd or 0.0)

    @staticmethod
    def _estimated_usage(request: LLMRequest, result: CallResult) -> Usage:
        produced = len(result.text) + sum(len(c.name) + len(str(c.arguments)) for c in result.tool_calls)
        return Usage(input_tokens=estimate_tokens(request), output_tokens=produced // 4 + 1)

    def record(self, usage: Usage, *, estimated: bool = False) -> CallRecord:
        cost = self.price.cost(usage) if self.price else None
        return CallRecord(self.provider.name, self.provider.model, usage, cost, estimated)
