"""A deterministic tokenizer and an honest simulation of Anthropic's prompt cache, for the local LLM server.

What it models (Anthropic's documented behaviour, "Prompt caching"):
- The prompt is a prefix in a fixed order: tools, then system blocks, then each message's content blocks.
- A ``cache_control`` on a block is a breakpoint: after the request, the prefix up to and including that
  block is in the cache (a *write*), but only if that prefix is at least ``min_tokens`` long (1024 for
  Sonnet-class models; shorter prefixes are silently not cached).
- A later request reads from the cache the longest prefix that a cached entry matches exactly, at a block
  boundary no more than ``lookback`` (20) blocks before one of its own breakpoints.
- Usage is reported as Anthropic does: ``cache_read_input_tokens`` (the prefix read), ``cache_creation_input_
  tokens`` (what the request added to the cache beyond what it read, up to its last cacheable breakpoint) and
  ``input_tokens`` (the rest, after the last breakpoint).
The cache time-to-live is ignored (entries never expire), which favours caching slightly; the campaign in
figure 4 runs turns back to back, well inside the 5-minute TTL, so this changes nothing there.

Tokens: 1 token per 4 characters (rounded up) of a block's text, plus 3 tokens of framing per message and per
tool. Deterministic, close enough to real tokenizers on English prose for ratios, and the same for both sides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

MESSAGE_FRAMING = 3
LOOKBACK_BLOCKS = 20
MIN_CACHEABLE = {"haiku": 4096, "opus": 4096}  # by model family; everything else (Sonnet) 1024
DEFAULT_MIN_CACHEABLE = 1024

# Anthropic's multipliers on the base input price.
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1


def count_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def min_cacheable_for(model: str) -> int:
    return next((n for family, n in MIN_CACHEABLE.items() if family in model), DEFAULT_MIN_CACHEABLE)


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @property
    def billed(self) -> float:
        """Input tokens as billed, in units of the base input price."""
        return (self.input_tokens + CACHE_WRITE_FACTOR * self.cache_creation_input_tokens
                + CACHE_READ_FACTOR * self.cache_read_input_tokens)


@dataclass(frozen=True)
class _Block:
    digest: bytes  # hash of the whole prefix up to and including this block
    tokens: int
    breakpoint: bool


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if block.get("type") == "text":
        return block.get("text", "")
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)


def prompt_blocks(body: dict[str, Any]) -> list[_Block]:
    """The request's prompt as a chain of blocks in cache-prefix order."""
    items: list[tuple[str, Any, bool, int]] = []  # (kind, block, breakpoint, framing)
    for tool in body.get("tools") or []:
        items.append(("tool", {k: v for k, v in tool.items() if k != "cache_control"}, "cache_control" in tool,
                      MESSAGE_FRAMING))
    system = body.get("system")
    if isinstance(system, str) and system:
        items.append(("system", system, False, MESSAGE_FRAMING))
    elif isinstance(system, list):
        for i, block in enumerate(system):
            items.append(("system", block, "cache_control" in block, MESSAGE_FRAMING if i == 0 else 0))
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else list(content or [])
        for i, block in enumerate(blocks):
            marked = isinstance(block, dict) and "cache_control" in block
            items.append((message.get("role", "user"), block, marked, MESSAGE_FRAMING if i == 0 else 0))
    if body.get("cache_control") and items:  # top-level automatic caching: a breakpoint on the last block
        kind, block, _, framing = items[-1]
        items[-1] = (kind, block, True, framing)
    chain, digest = [], hashlib.sha256(str(body.get("model", "")).encode()).digest()
    for kind, block, marked, framing in items:
        text = _block_text(block)
        # The block boundary is part of the identity: a new message is not the same prefix as a longer block.
        digest = hashlib.sha256(digest + kind.encode() + b"\x00" + str(framing).encode() + b"\x00"
                                + text.encode()).digest()
        chain.append(_Block(digest, count_tokens(text) + framing, marked))
    return chain


class PromptCache:
    def __init__(self, *, lookback: int = LOOKBACK_BLOCKS) -> None:
        self.lookback = lookback
        self._entries: set[bytes] = set()

    def clear(self) -> None:
        self._entries.clear()

    def usage(self, body: dict[str, Any]) -> CacheUsage:
        """Bill one request and update the cache with its breakpoints."""
        blocks = prompt_blocks(body)
        cumulative, total = [], 0
        for block in blocks:
            total += block.tokens
            cumulative.append(total)
        breakpoints = [i for i, b in enumerate(blocks) if b.breakpoint]
        if not breakpoints:
            return CacheUsage(total, 0, 0)
        min_tokens = min_cacheable_for(str(body.get("model", "")))
        read_end = -1
        for bp in breakpoints:
            for i in range(bp, max(-1, bp - self.lookback), -1):
                if blocks[i].digest in self._entries:
                    read_end = max(read_end, i)
                    break
        read = cumulative[read_end] if read_end >= 0 else 0
        cacheable = [bp for bp in breakpoints if cumulative[bp] >= min_tokens]
        write_end = cacheable[-1] if cacheable else -1
        created = cumulative[write_end] - read if write_end > read_end else 0
        for bp in cacheable:
            self._entries.add(blocks[bp].digest)
        return CacheUsage(total - read - created, created, read)
