"""The one small streaming interface every LLM provider implements.

The DM service only ever sees the types in this module: a request made of plain messages, and a stream of
``TextChunk`` / ``ToolCall`` / ``Usage`` / ``Finish`` items. Every SDK exception is translated into
``ProviderError`` by the provider module that raised it, so retry policy (in ``bot.dm.guards``) can decide on
``ProviderError.retryable`` and ``retry_after`` without knowing which SDK is behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: a name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool. ``arguments`` is the parsed JSON object ({} when the model sent none).

    ``malformed`` is set when the model's arguments were not a JSON object; the service answers such a call
    with an error result instead of guessing.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    malformed: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What the engine answers to one ``ToolCall`` (matched by ``call_id``)."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, provider-neutral.

    A user message carries ``text`` and/or ``tool_results``; an assistant message carries ``text`` and/or
    ``tool_calls``. Providers turn this into their own wire format. A ``volatile`` message comes last and
    changes every turn, so a provider with explicit cache breakpoints puts them before it.
    """

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    volatile: bool = False  # changes every turn (the engine's [party] block): kept out of the cached prefix


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One call. ``volatile`` is text that changes every turn (the party's state): providers put it at the very
    end of the last user message, *after* the prompt-cache breakpoint, so that the stable prefix before it is
    still read from the cache next turn. ``model`` overrides the provider's model for this call (the running
    summary may use a cheaper one); ``cache`` False sends no cache breakpoints (a one-off prompt such as a
    summary would only pay the cache-write premium)."""

    system: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    volatile: str = ""
    model: str | None = None
    cache: bool = True


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one LLM call, as the provider reported them (cumulative: a later Usage replaces an
    earlier one of the same call).

    ``input_tokens`` excludes cached tokens: Anthropic reports it that way; for OpenAI it is
    ``prompt_tokens - cached_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


FinishReason = Literal["stop", "length", "tool_calls", "other"]


@dataclass(frozen=True, slots=True)
class Finish:
    """The call ended normally. A stream that ends without a ``Finish`` is an error (``truncated``)."""

    reason: FinishReason


StreamItem = TextChunk | ToolCall | Usage | Finish

ErrorKind = Literal[
    "connection",  # could not connect, or the connection broke
    "timeout",  # no byte for timeout_seconds
    "rate_limited",  # 429 that may be retried
    "overloaded",  # 529 / overloaded_error
    "server",  # 5xx, 408, 409
    "stream",  # an error event or malformed data in the middle of a stream
    "truncated",  # the stream ended without a finish reason
    "bad_request",  # 400, 404, 413, 422: our request is wrong; retrying cannot help
    "auth",  # 401, 403: the key is wrong or lacks permission
    "quota",  # spend limit / insufficient quota: retrying cannot help
    "context_overflow",  # 400 "prompt is too long": the same request cannot succeed, a shorter one can
]


class ProviderError(Exception):
    """An LLM call failed. ``message`` is safe to show a user (never a secret, never a traceback)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.detail: str | None = None  # the server's own words: for the operator's log, never shown to players

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (
            f"ProviderError(kind={self.kind!r}, status={self.status!r}, retryable={self.retryable!r}, "
            f"retry_after={self.retry_after!r}, message={self.message!r})"
        )


@runtime_checkable
class LLMProvider(Protocol):
    """A provider streams one call. It never retries (tenacity in the DM service owns retries)."""

    name: str
    model: str

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        """Yield ``TextChunk``/``ToolCall``/``Usage`` items and end with one ``Finish``; raise ``ProviderError``."""
        ...

    async def aclose(self) -> None: ...


def refused_parameter(error: ProviderError, name: str) -> bool:
    """A 400 saying the model does not take parameter ``name`` (e.g. reasoning models and ``temperature``)."""
    detail = (error.detail or "").lower()
    return error.kind == "bad_request" and name in detail and any(
        word in detail for word in ("unsupported", "not supported", "does not support", "not allowed",
                                    "only the default", "deprecated", "invalid", "unknown", "may only"))
