"""Shared instruments of the fault and crash tests: a provider wrapper that records what the provider reported,
readers of the usage ledger and turns straight from the SQLite file, a port nothing listens on, and what a
user sees of one interaction."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bot.llm.base import LLMProvider, LLMRequest, StreamItem, Usage

CURSOR = "▌"
INTERRUPTED = "The DM was interrupted"


class RecordingProvider:
    """A real provider, unchanged, that also keeps what each call reported: the last ``Usage`` of the call
    (usage is cumulative within a call) or None when the call reported none. One call = one HTTP request,
    since the SDKs are built with ``max_retries=0``."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.reported: list[Usage | None] = []

    @property
    def calls(self) -> int:
        return len(self.reported)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        last: Usage | None = None
        try:
            async for item in self.inner.stream(request):
                if isinstance(item, Usage):
                    last = item
                yield item
        finally:
            self.reported.append(last)

    async def aclose(self) -> None:
        await self.inner.aclose()


def closed_port() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the database, read as an auditor would (sqlite3, not the bot's store) ------------------------------------


def _rows(path: str, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, args).fetchall()


def ledger(path: str, *, estimated: bool = False) -> list[tuple[int, int, int, int]]:
    """Every charged call, in order: (input, output, cache read, cache write); those charged from the provider's
    report, or (``estimated``) those whose usage never came and were charged from the bot's estimate."""
    return _rows(path, "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens FROM usage"
                       f" WHERE estimated = {int(estimated)} ORDER BY id")


def as_row(usage: Usage) -> tuple[int, int, int, int]:
    return usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens


@dataclass(frozen=True)
class TurnRow:
    id: int
    session_id: int
    seq: int
    role: str
    author_id: str | None
    content: str
    status: str


def turns(path: str) -> list[TurnRow]:
    return [TurnRow(*r) for r in _rows(
        path, "SELECT id, session_id, seq, role, author_id, content, status FROM turns ORDER BY session_id, seq")]


def usage_rows(path: str) -> list[tuple[int, int | None, int]]:
    """(session_id, turn_id, total tokens) of every charged call."""
    return _rows(path, "SELECT session_id, turn_id, input_tokens + output_tokens + cache_read_tokens"
                       " + cache_write_tokens FROM usage ORDER BY id")


def sessions(path: str) -> list[tuple[int, str, str]]:
    return _rows(path, "SELECT id, channel_id, status FROM sessions ORDER BY id")


# -- what a user sees ------------------------------------------------------------------------------------------


def seen(standin: Any, inter: Any) -> list[Any]:
    """The live (not deleted) messages the interaction left that its user can see, in order."""
    return [m for m in standin.messages(inter.channel_id, viewer_id=inter.user_id)
            if not m.deleted and (m.interaction_id == inter.id or m.id in inter.followup_ids
                                  or m.id == inter.original_id)]


def settled(standin: Any, inter: Any) -> list[Any] | None:
    """The interaction's messages once final (nothing loading, no cursor), else None."""
    shown = seen(standin, inter)
    if shown and not any(m.loading or m.content.endswith(CURSOR) for m in shown):
        return shown
    return None
