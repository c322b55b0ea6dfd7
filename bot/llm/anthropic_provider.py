"""Anthropic Messages API behind the ``LLMProvider`` interface.

We call ``messages.create(stream=True)`` and read the raw events ourselves instead of using the SDK's
``messages.stream()`` helper: the helper accumulates a full ``Message`` snapshot on every event, which we do
not need (we only forward deltas), and it would hide the event order we rely on for usage accounting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic

from bot.llm import errors
from bot.llm.base import (
    Finish,
    FinishReason,
    LLMRequest,
    Message,
    ProviderError,
    StreamItem,
    TextChunk,
    ToolCall,
    Usage,
)

_EPHEMERAL = {"type": "ephemeral"}

# ``model_context_window_exceeded`` stops the answer for lack of room, which is what "length" tells the
# service; ``refusal`` and ``pause_turn`` have no neutral equivalent.
_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}


@dataclass
class _PendingToolUse:
    id: str
    name: str
    start_input: Any
    parts: list[str] = field(default_factory=list)

    def finish(self) -> ToolCall:
        if not self.parts and isinstance(self.start_input, dict) and self.start_input:
            # Some Anthropic-compatible servers put the whole input in content_block_start and send no deltas.
            return ToolCall(self.id, self.name, dict(self.start_input))
        arguments, malformed = errors.parse_tool_arguments("".join(self.parts))
        return ToolCall(self.id, self.name, arguments, malformed=malformed or not self.name)


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, model: str, *, base_url: str | None = None) -> None:
        self._client = client
        self.model = model
        self.base_url = base_url
        self.label = errors.official_or_local_label("Anthropic", "api.anthropic.com", client.base_url)
        self.endpoint = errors.endpoint_for_log(client.base_url)  # for the log only

    async def aclose(self) -> None:
        await self._client.close()

    def request_params(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for ``request`` (without ``stream``)."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens,
            "messages": to_anthropic_messages(request.messages, volatile=request.volatile, cache=request.cache),
        }
        if request.system:
            # A breakpoint after the system prompt caches tools + system (tools come first in the prefix).
            params["system"] = [{"type": "text", "text": request.system,
                                 **({"cache_control": _EPHEMERAL} if request.cache else {})}]
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
        if request.temperature is not None:
            # anthropic 1.x+ removed the sampling parameters from the typed signature; the API still accepts
            # them, and extra_body is the SDK's documented route. Newer models reject anything but 1.0, so the
            # DM service should leave temperature unset for Anthropic unless the operator asked for it.
            params["extra_body"] = {"temperature": request.temperature}
        return params

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        params = self.request_params(request)
        return errors.stream_sdk(lambda: self._client.messages.create(**params, stream=True), self._read, self._translate)

    async def _read(self, sdk_stream: AsyncIterator[Any]) -> AsyncIterator[StreamItem]:
        usage = Usage()
        stop_reason: str | None = None
        pending: dict[int | None, _PendingToolUse] = {}
        async for event in sdk_stream:
            # getattr throughout: Anthropic-compatible servers are not all complete, and the SDK does not
            # validate events (it constructs them leniently).
            kind, index = getattr(event, "type", None), getattr(event, "index", None)
            if kind == "message_start":
                usage = _usage_from(getattr(getattr(event, "message", None), "usage", None), usage)
                yield usage
            elif kind == "content_block_start":
                block = getattr(event, "content_block", None)
                if getattr(block, "type", None) == "tool_use":
                    block_id, name = getattr(block, "id", None) or "", getattr(block, "name", None) or ""
                    pending[index] = _PendingToolUse(block_id, name, getattr(block, "input", None))
            elif kind == "content_block_delta":
                delta = getattr(event, "delta", None)
                delta_type = getattr(delta, "type", None)
                if delta_type == "text_delta":
                    if getattr(delta, "text", None):
                        yield TextChunk(delta.text)
                elif delta_type == "input_json_delta" and index in pending:
                    pending[index].parts.append(getattr(delta, "partial_json", None) or "")
                # thinking / signature / citations deltas are not part of the narration: ignored.
            elif kind == "content_block_stop":
                tool_use = pending.pop(index, None)
                if tool_use is not None:
                    yield tool_use.finish()
            elif kind == "message_delta":
                stop_reason = getattr(getattr(event, "delta", None), "stop_reason", None) or stop_reason
                # output_tokens here is cumulative for the whole call, not an increment.
                usage = _usage_from(getattr(event, "usage", None), usage)
                yield usage
            elif kind == "message_stop":
                # Read the body to its end (only the stream's closing bytes follow): a response closed half-read
                # cannot go back to the connection pool, and every call would pay a new TCP and TLS handshake.
                async for _ in sdk_stream:
                    pass
                yield Finish(_STOP_REASONS.get(stop_reason or "", "other"))
                return
        raise errors.truncated(self.label)

    def _translate(self, exc: Exception) -> ProviderError | None:
        label = self.label
        # APITimeoutError subclasses APIConnectionError: test it first.
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderError("timeout", f"{label} did not answer in time", retryable=True)
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderError("connection", f"could not connect to {label}", retryable=True)
        if isinstance(exc, anthropic.APIStatusError):
            if exc.status_code < 400:
                # An ``event: error`` inside a 200 stream: the SDK raises APIStatusError with the stream's
                # status (200) and the event's error type, e.g. overloaded_error.
                return errors.midstream_error(label, exc.type)
            return errors.status_error(
                label, exc.status_code, error_type=exc.type, error_code=exc.error_code,
                headers=exc.response.headers, detail=exc.message,
            )
        if isinstance(exc, anthropic.APIError):  # e.g. APIResponseValidationError: the data made no sense
            return ProviderError("stream", f"{label} sent data that could not be understood", retryable=True)
        return errors.transport_error(label, exc)


def _usage_from(reported: Any, previous: Usage) -> Usage:
    """Fold one usage report into the running totals. Every field Anthropic reports is cumulative, and
    message_delta may omit the input-side fields (then the message_start values stand)."""
    if reported is None:
        return previous

    def pick(name: str, old: int) -> int:
        value = getattr(reported, name, None)
        return value if isinstance(value, int) else old

    return Usage(
        input_tokens=pick("input_tokens", previous.input_tokens),
        output_tokens=pick("output_tokens", previous.output_tokens),
        cache_read_tokens=pick("cache_read_input_tokens", previous.cache_read_tokens),
        cache_write_tokens=pick("cache_creation_input_tokens", previous.cache_write_tokens),
    )


def to_anthropic_messages(
    messages: tuple[Message, ...], *, volatile: str = "", cache: bool = True
) -> list[dict[str, Any]]:
    """Neutral messages → Anthropic ``messages``, same-role neighbours merged, cache breakpoint on the last
    block, then the ``volatile`` text (if any) as one more block after the breakpoint: it changes every turn,
    and a breakpoint after it would cache a prefix the next turn never repeats.

    Merging keeps each original text as its own block (rather than joining strings) so that a turn that was
    sent alone last time is still a byte-identical block, and the cache keeps matching. In a user message
    every tool_result block must come before any text, so a merged user message is reordered that way.
    """
    merged: list[dict[str, Any]] = []
    volatile_blocks: set[int] = set()  # ids of the blocks of volatile messages (Message.volatile)
    for message in messages:
        blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty content and empty text blocks
        if message.volatile:
            volatile_blocks.update(id(block) for block in blocks)
        if merged and merged[-1]["role"] == message.role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": message.role, "content": blocks})
    for entry in merged:
        if entry["role"] == "user":
            entry["content"].sort(key=lambda block: block["type"] != "tool_result")  # stable
    if cache:
        # The next call repeats this whole conversation as its prefix, so it reads it from the cache. The
        # breakpoint goes on the last block that is not volatile: the party's state at the end changes every
        # turn, and a prefix that includes it would never be read again.
        for entry in reversed(merged):
            stable = [i for i, block in enumerate(entry["content"]) if id(block) not in volatile_blocks]
            if stable:
                entry["content"][stable[-1]] = {**entry["content"][stable[-1]], "cache_control": _EPHEMERAL}
                break
    if volatile:
        block = {"type": "text", "text": volatile}
        if merged and merged[-1]["role"] == "user":
            merged[-1]["content"].append(block)
        else:
            merged.append({"role": "user", "content": [block]})
    return merged


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.role == "user":
        blocks.extend(
            {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}
            for r in message.tool_results
        )
        if message.text:
            blocks.append({"type": "text", "text": message.text})
    else:
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        blocks.extend(
            {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)} for c in message.tool_calls
        )
    return blocks
