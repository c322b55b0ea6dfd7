"""A local LLM server for the benchmarks: Anthropic Messages and OpenAI Chat Completions streaming (SSE), at a
set pace, with exact send times.

Pace: time to first token (from the request's arrival), tokens per second, reply length in tokens, tokens per
SSE event. ``tokens_per_second = 0`` is an instant LLM: the whole answer is written at once.

Every request is identified by a marker word (``BENCH-…``) found in its last message (the player's action or
the premise); the reply echoes the marker first, so the first visible text of a turn can be recognised in
Discord. For each marker the server logs when each text event left (after ``write`` returned, i.e. handed to
the socket) and the cumulative reply length it carried. The wire format is copied from the recorded streams
in tests/providers/sse/. Anthropic usage comes from ``PromptCache`` (an honest prompt-cache simulation).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.prompt_cache import CacheUsage, PromptCache, count_tokens

MARKER = re.compile(r"BENCH-[0-9A-Za-z]+")
WORDS = ("lamp", "dark", "road", "gate", "wind", "moss", "iron", "bell", "fire", "rain", "wolf", "salt", "song",
         "mist", "tide", "oath", "rune", "hall", "ward", "dusk", "stag", "hawk", "gold", "dust", "coin", "vine")


@dataclass
class Pace:
    tokens_per_second: float = 60.0  # 0: instant
    ttft_seconds: float = 0.3
    reply_tokens: int = 300
    tokens_per_event: int = 3
    vary: float = 0.0  # reply length varies by up to ± this fraction, deterministically per request

    @property
    def instant(self) -> bool:
        return self.tokens_per_second <= 0


@dataclass
class StreamLog:
    marker: str
    provider: str
    received_at: float
    first_text_at: float | None = None
    done_at: float | None = None
    events: list[tuple[float, int]] = field(default_factory=list)  # (time written, reply chars so far)
    text: str = ""
    usage: CacheUsage | None = None
    output_tokens: int = 0


def reply_tokens(marker: str, n: int) -> list[str]:
    """The reply as tokens: the marker, then ``n - 1`` four-letter words (about 4-5 characters a token)."""
    seed = zlib.crc32(marker.encode())
    words = [f" {WORDS[(seed + i * 7) % len(WORDS)]}" for i in range(max(0, n - 1))]
    if words:
        words[-1] += "."
    return [marker, *words]


class LLMServer:
    def __init__(self, pace: Pace | None = None, *, host: str = "127.0.0.1") -> None:
        self.pace = pace or Pace()
        self.host = host
        self.cache = PromptCache()
        self.logs: dict[str, StreamLog] = {}
        self.requests = 0
        self.client_ports: set[int] = set()  # distinct client sockets seen (new connections vs keep-alive reuse)
        self._anon = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> LLMServer:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/chat/completions", self._openai)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def anthropic_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def url_for(self, provider: str) -> str:
        return self.anthropic_url if provider == "anthropic" else self.openai_url

    # -- common ---------------------------------------------------------------------------------------
    def _begin(self, request: web.Request, body: dict[str, Any], provider: str) -> tuple[StreamLog, list[str]]:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.client_ports.add(peer[1])
        now = time.monotonic()
        messages = body.get("messages") or []
        found = MARKER.findall(json.dumps(messages[-1], ensure_ascii=False)) if messages else []
        marker = found[-1] if found else f"BENCH-anon{next(self._anon)}"
        key = marker if marker not in self.logs else f"{marker}#{self.requests}"  # a retry keeps the first log
        pace = self.pace
        n = pace.reply_tokens
        if pace.vary:
            n = max(2, round(n * (1 + pace.vary * ((zlib.crc32(marker.encode()) % 2001) / 1000 - 1))))
        log = StreamLog(marker, provider, now, output_tokens=n)
        self.logs[key] = log
        return log, reply_tokens(marker, n)

    async def _paced(self, response: web.StreamResponse, log: StreamLog, preamble: bytes,
                     events: list[tuple[bytes, int]], closing: bytes) -> None:
        """Write the preamble with the first text event after the TTFT, then the rest at the set rate."""
        pace = self.pace
        if pace.instant:
            body = preamble + b"".join(e for e, _ in events) + closing
            await response.write(body)
            now = time.monotonic()
            log.first_text_at = now
            log.events = [(now, chars) for _, chars in events]
            log.done_at = now
            return
        start = log.received_at + pace.ttft_seconds
        per_event = pace.tokens_per_event / pace.tokens_per_second
        for k, (event, chars) in enumerate(events):
            delay = start + k * per_event - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await response.write(preamble + event if k == 0 else event)
            now = time.monotonic()
            if k == 0:
                log.first_text_at = now
            log.events.append((now, chars))
        await response.write(closing)
        log.done_at = time.monotonic()

    @staticmethod
    def _group(tokens: list[str], size: int) -> list[tuple[str, int]]:
        groups, chars = [], 0
        for i in range(0, len(tokens), max(1, size)):
            piece = "".join(tokens[i:i + size])
            chars += len(piece)
            groups.append((piece, chars))
        return groups

    @staticmethod
    async def _open(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                           "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    # -- Anthropic Messages ----------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        log, tokens = self._begin(request, body, "anthropic")
        usage = self.cache.usage(body)
        log.usage = usage
        if not body.get("stream"):
            text = "".join(tokens)
            log.first_text_at = log.done_at = time.monotonic()
            log.text = text
            return web.json_response({
                "id": "msg_bench", "type": "message", "role": "assistant", "model": body.get("model"),
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": _anthropic_usage(usage, len(tokens))})
        response = await self._open(request)
        start = {"type": "message_start", "message": {
            "id": f"msg_{log.marker}", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**_anthropic_usage(usage, 1), "service_tier": "standard"}}}
        preamble = (_sse("message_start", start)
                    + _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
        events = [(_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": piece}}), chars)
                  for piece, chars in self._group(tokens, self.pace.tokens_per_event)]
        closing = (_sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                   + _sse("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                            "usage": {"output_tokens": len(tokens)}})
                   + _sse("message_stop", {"type": "message_stop"}))
        log.text = "".join(tokens)
        await self._paced(response, log, preamble, events, closing)
        await response.write_eof()
        return response

    # -- OpenAI Chat Completions -----------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        log, tokens = self._begin(request, body, "openai")
        prompt = sum(count_tokens(json.dumps(m, ensure_ascii=False)) for m in body.get("messages") or [])
        prompt += sum(count_tokens(json.dumps(t)) for t in body.get("tools") or [])
        log.usage = CacheUsage(prompt, 0, 0)
        response = await self._open(request)
        base = {"id": f"chatcmpl-{log.marker}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model"), "system_fingerprint": "fp_bench"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _data({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                               "finish_reason": finish}], "usage": None})

        preamble = chunk({"role": "assistant", "content": "", "refusal": None})
        events = [(chunk({"content": piece}), chars)
                  for piece, chars in self._group(tokens, self.pace.tokens_per_event)]
        closing = chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            closing += _data({**base, "choices": [], "usage": {
                "prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens),
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}}})
        closing += b"data: [DONE]\n\n"
        log.text = "".join(tokens)
        await self._paced(response, log, preamble, events, closing)
        await response.write_eof()
        return response


def _anthropic_usage(usage: CacheUsage, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens, "output_tokens": output_tokens}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _data(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
