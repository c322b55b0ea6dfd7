"""OpenAI Chat Completions (and OpenAI-compatible servers: Ollama, vLLM, llama.cpp, LM Studio) behind the
``LLMProvider`` interface.

Usage: OpenAI reports it only in a last chunk with ``choices == []``, and only when asked with
``stream_options={"include_usage": True}``. Servers that ignore that option send no usage at all; then this
provider yields no ``Usage`` and the caller has only its own estimate. A few servers attach cumulative usage
to ordinary chunks instead; taking the last usage seen covers both shapes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai

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

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


@dataclass
class _PendingToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def finish(self, index: int) -> ToolCall:
        arguments, malformed = errors.parse_tool_arguments("".join(self.arguments))
        # llama.cpp and some Ollama versions omit ids; the id only has to match our own tool message.
        return ToolCall(self.id or f"call_{index}", self.name, arguments, malformed=malformed or not self.name)


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI, model: str, *, base_url: str | None = None) -> None:
        self._client = client
        self.model = model
        self.base_url = base_url
        self.label = errors.official_or_local_label("OpenAI", "api.openai.com", client.base_url)
        self.endpoint = errors.endpoint_for_log(client.base_url)  # for the log only
        # api.openai.com deprecated max_tokens (reasoning models reject it); the servers people run locally
        # (Ollama, vLLM, llama.cpp) know max_tokens and may ignore max_completion_tokens.
        self._max_tokens_field = "max_completion_tokens" if client.base_url.host == "api.openai.com" else "max_tokens"

    async def aclose(self) -> None:
        await self._client.close()

    def request_params(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.system, request.messages, volatile=request.volatile),
            "stream": True,
            "stream_options": {"include_usage": True},
            self._max_tokens_field: request.max_tokens,
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        params = self.request_params(request)
        # The SDK sends the request and raises its errors for an HTTP failure; the 200 body we read ourselves.
        # The SDK's own stream builds a typed object per chunk, which costs about 40 times a json.loads (bench/),
        # and a chat answer is made of hundreds of chunks.
        return errors.stream_sdk(
            lambda: self._client.chat.completions.with_streaming_response.create(**params).__aenter__(),
            self._read,
            self._translate,
        )

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of an SSE body (``data:`` lines, an event per blank line) until ``[DONE]``."""
        data: list[str] = []
        async for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif not line and data:
                payload, data = "\n".join(data), []
                if payload.startswith("[DONE]"):
                    return
                chunk = json.loads(payload)
                if isinstance(chunk, dict) and chunk.get("error"):
                    # An error chunk in a stream that had answered 200 (what the SDK raises a bare APIError for).
                    raise ProviderError("stream", f"{self.label} reported an error in the middle of the answer",
                                        retryable=True)
                if isinstance(chunk, dict):
                    yield chunk

    async def _read(self, response: Any) -> AsyncIterator[StreamItem]:
        finish_reason: str | None = None
        usage: Usage | None = None
        calls: list[_PendingToolCall] = []  # in the order they began
        at_index: dict[int, _PendingToolCall] = {}  # the call each server index currently continues
        async for chunk in self._chunks(response):
            if chunk.get("usage"):
                usage = _usage_from(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if choice.get("index") not in (0, None):
                    continue  # we never ask for n > 1
                delta = choice.get("delta")
                if delta:
                    if delta.get("content"):
                        yield TextChunk(delta["content"])
                    for part in delta.get("tool_calls") or ():
                        _accumulate(calls, at_index, part)
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        # The finish reason arrives before the usage chunk, so only the end of the stream says "complete".
        if finish_reason is None:
            raise errors.truncated(self.label)
        for number, call in enumerate(calls):
            yield call.finish(number)
        if usage is not None:
            yield usage
        reason = _FINISH_REASONS.get(finish_reason, "other")
        if calls and reason == "stop":
            reason = "tool_calls"  # older Ollama versions report "stop" for an answer that calls tools
        yield Finish(reason)

    def _translate(self, exc: Exception) -> ProviderError | None:
        label = self.label
        # APITimeoutError subclasses APIConnectionError: test it first. These come from sending the request; a
        # failure while we read the body ourselves is a raw httpx2 error (errors.transport_error below).
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError("timeout", f"{label} did not answer in time", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError("connection", f"the connection to {label} failed", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            return errors.status_error(
                label, exc.status_code, error_type=exc.type, error_code=exc.code, headers=exc.response.headers,
                detail=exc.message,
            )
        if isinstance(exc, openai.APIError):  # e.g. APIResponseValidationError: the data made no sense
            return ProviderError("stream", f"{label} sent data that could not be understood", retryable=True)
        return errors.transport_error(label, exc)


def _accumulate(calls: list[_PendingToolCall], at_index: dict[int, _PendingToolCall], part: dict[str, Any]) -> None:
    """Add one tool-call delta. Deltas name their call by ``index``; a delta with a new id at an index already in
    use starts a new call (Ollama sends ``index: 0`` for each of several calls), and one without an index
    continues the last call unless it brings an id (some servers omit the index)."""
    index = part.get("index")
    call_id = part.get("id")
    pending = at_index.get(index) if isinstance(index, int) else (calls[-1] if calls and not call_id else None)
    if pending is None or (call_id and pending.id and call_id != pending.id):
        pending = _PendingToolCall()
        calls.append(pending)
    if isinstance(index, int):
        at_index[index] = pending
    if call_id and not pending.id:
        pending.id = call_id
    function = part.get("function")
    if function:
        if function.get("name") and not pending.name:
            pending.name = function["name"]  # sent whole, once; some servers repeat it on every delta
        if function.get("arguments"):
            pending.arguments.append(function["arguments"])


def _usage_from(reported: dict[str, Any]) -> Usage:
    prompt = reported.get("prompt_tokens") or 0
    completion = reported.get("completion_tokens") or 0
    cached = (reported.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    # Usage.input_tokens excludes cached tokens (Anthropic's convention), so cached ones are not counted twice.
    return Usage(input_tokens=max(0, prompt - cached), output_tokens=completion, cache_read_tokens=cached)


def to_openai_messages(system: str, messages: tuple[Message, ...], *, volatile: str = "") -> list[dict[str, Any]]:
    """System prompt first, then the conversation. Same-role neighbours are merged before conversion: some
    local servers' chat templates refuse two user turns in a row. Tool results become ``role: tool``
    messages placed before the user's text, right after the assistant message that called the tools.
    ``volatile`` ends the last user message (OpenAI's automatic cache keys on the prefix before it).
    """
    wire: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if volatile:
        messages = (*messages, Message("user", volatile))
    for message in _merge_same_role(messages):
        if message.role == "user":
            for result in message.tool_results:
                # Chat Completions has no is_error flag; say it in the content so the model can tell.
                content = f"Error: {result.content}" if result.is_error else result.content
                wire.append({"role": "tool", "tool_call_id": result.call_id, "content": content})
            if message.text:
                wire.append({"role": "user", "content": message.text})
        else:
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
                    }
                    for c in message.tool_calls
                ]
            if entry["content"] is not None or message.tool_calls:
                wire.append(entry)
    return wire


def _merge_same_role(messages: tuple[Message, ...]) -> list[Message]:
    merged: list[Message] = []
    for message in messages:
        if merged and merged[-1].role == message.role:
            previous = merged[-1]
            text = "\n\n".join(t for t in (previous.text, message.text) if t)
            merged[-1] = Message(
                previous.role,
                text,
                previous.tool_calls + message.tool_calls,
                previous.tool_results + message.tool_results,
            )
        else:
            merged.append(message)
    return merged
