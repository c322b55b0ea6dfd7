"""Prometheus metrics, gathered by observing rather than by editing the turn path.

- ``ObservedProvider`` wraps the LLM provider: every call (turns, and any background call) is counted by
  provider and outcome, and the tokens it reported by kind.
- ``observe_turn`` wraps the DM events a face already receives: turns by outcome, retries, and the latency to
  the first text and to the end.
- ``http_trace`` is an aiohttp trace handed to discord.py (``http_trace=``): every 429 Discord answers, REST,
  webhooks and interaction callbacks alike.
- Gauges read at scrape time: adventures running (the store) and the gateway's heartbeat latency.

Each bot has its own registry, so tests (and two bots in one process) never mix their counts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.dm.events import DMEvent, Done, Failed, Retrying, TextDelta
from bot.llm.base import LLMProvider, LLMRequest, ProviderError, StreamItem, Usage

# Refusals made before any LLM call: counted as turns, kept out of the latency histograms.
REFUSALS = frozenset({"invalid", "no_session", "session_active", "busy", "rate_limited", "budget", "stopping"})
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


class BotMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter("dm_turns", "DM turns (/start, /act) by how they ended: done, or the failure kind",
                             ["outcome"], registry=r)
        self.llm_calls = Counter("dm_llm_calls", "LLM calls by provider and outcome (ok, or the error kind)",
                                 ["provider", "outcome"], registry=r)
        self.tokens = Counter("dm_llm_tokens", "Tokens the providers reported, by kind", ["kind"], registry=r)
        self.retries = Counter("dm_llm_retries", "LLM calls tried again after a temporary failure", registry=r)
        self.discord_429 = Counter("dm_discord_rate_limited", "HTTP 429 answers from Discord (discord.py waits "
                                   "and retries them)", registry=r)
        self.first_text = Histogram("dm_turn_first_text_seconds", "From the command to the DM's first text",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.turn_seconds = Histogram("dm_turn_seconds", "From the command to the end of the DM's turn",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.active = Gauge("dm_active_adventures", "Adventures running now (all servers)", registry=r)
        self.gateway_latency = Gauge("dm_discord_gateway_latency_seconds",
                                     "Discord gateway heartbeat latency (NaN before the first heartbeat)",
                                     registry=r)
        for kind in TOKEN_KINDS:  # shown as 0 from the start, so rate() works from the first scrape
            self.tokens.labels(kind)

    # -- observers ----------------------------------------------------------------------------------------

    def observe_provider(self, provider: LLMProvider) -> LLMProvider:
        return ObservedProvider(provider, self)

    async def observe_turn(self, events: AsyncIterator[DMEvent]) -> AsyncIterator[DMEvent]:
        """Pass the events through unchanged, counting and timing the turn."""
        started = time.monotonic()
        first_text: float | None = None
        outcome = "interrupted"  # the face stopped listening, or the bot is stopping
        try:
            async with aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta) and first_text is None:
                        first_text = time.monotonic() - started
                    elif isinstance(event, Retrying):
                        self.retries.inc()
                    elif isinstance(event, Done):
                        outcome = "done"
                    elif isinstance(event, Failed):
                        outcome = event.kind
                    yield event
        finally:
            self.turns.labels(outcome).inc()
            if outcome not in REFUSALS:
                self.turn_seconds.observe(time.monotonic() - started)
                if first_text is not None:
                    self.first_text.observe(first_text)

    def http_trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status == 429:
                self.discord_429.inc()

        trace.on_request_end.append(on_request_end)
        return trace

    # -- scrape -------------------------------------------------------------------------------------------

    async def render(self, *, active_adventures: Callable[[], Awaitable[int]] | None = None,
                     gateway_latency: float | None = None) -> bytes:
        """The Prometheus text format, with the gauges read now."""
        if active_adventures is not None:
            try:
                self.active.set(await asyncio.wait_for(active_adventures(), 2.0))
            except Exception:  # noqa: BLE001 - a store that does not answer is /healthz's to report; keep the last
                pass
        latency = gateway_latency if gateway_latency is not None and math.isfinite(gateway_latency) else math.nan
        self.gateway_latency.set(latency)
        return generate_latest(self.registry)


class ObservedProvider:
    """The provider, with each call counted (by outcome) and its reported tokens added up (by kind)."""

    def __init__(self, inner: LLMProvider, metrics: BotMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        self.model = inner.model

    def __getattr__(self, name: str) -> Any:  # anything else a provider offers
        return getattr(self.inner, name)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        usage: Usage | None = None
        outcome = "cancelled"  # the caller stopped reading before the end
        try:
            async with aclosing(self.inner.stream(request)) as items:
                async for item in items:
                    if isinstance(item, Usage):
                        usage = item  # cumulative: the last one is the call's
                    yield item
            outcome = "ok"
        except ProviderError as error:
            outcome = error.kind
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.metrics.llm_calls.labels(self.name, outcome).inc()
            if usage is not None:
                for kind in TOKEN_KINDS:
                    if amount := getattr(usage, f"{kind}_tokens"):
                        self.metrics.tokens.labels(kind).inc(amount)

    async def aclose(self) -> None:
        await self.inner.aclose()
