"""Fixtures for provider tests: the real SDK clients, fed by ``httpx2.MockTransport``.

Both SDKs send HTTP through httpx2, so respx / pytest-httpx would see nothing; a MockTransport passed as
``http_client`` sits exactly where the network would be. ``FakeServer`` answers each request with the next
queued response and keeps every request, so a test can assert on the body the SDK actually sent.
SSE bodies live in ``sse/`` in each provider's exact wire format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from bot.llm import make_provider
from bot.llm.base import LLMProvider, LLMRequest, Message, ProviderError, StreamItem

SSE_DIR = Path(__file__).parent / "sse"

# A key that must never show up in anything a user could see.
SECRET_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"


class ChunkedStream(httpx2.AsyncByteStream):
    """A response body delivered in pieces, optionally failing after the last one, as a real socket can."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self._chunks = chunks
        self._error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        self.closed = True


def split_bytes(data: bytes, size: int) -> list[bytes]:
    """Cut a body at arbitrary byte offsets: inside lines, inside JSON, inside multi-byte characters."""
    return [data[i : i + size] for i in range(0, len(data), size)]


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.streams: list[ChunkedStream] = []
        self._queue: list[Callable[[], httpx2.Response]] = []

    def sse(self, name: str, *, chunk_size: int | None = None, error: Exception | None = None) -> FakeServer:
        """Queue a 200 SSE answer from ``sse/<name>``; ``error`` is raised after its last byte."""
        body = (SSE_DIR / name).read_bytes()

        def make() -> httpx2.Response:
            stream = ChunkedStream(split_bytes(body, chunk_size) if chunk_size else [body], error)
            self.streams.append(stream)
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

        self._queue.append(make)
        return self

    def error(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> FakeServer:
        """Queue an HTTP error answer with a JSON body."""
        self._queue.append(
            lambda: httpx2.Response(status, headers={"content-type": "application/json", **(headers or {})}, json=body)
        )
        return self

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if not self._queue:
            raise AssertionError(f"unexpected request: {request.method} {request.url}")
        return self._queue.pop(0)()

    @property
    def last_json(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def build(server: FakeServer) -> AsyncIterator[Callable[..., LLMProvider]]:
    """``build("anthropic" | "openai", base_url=..., api_key=..., timeout_seconds=...)`` → a provider whose SDK
    client talks to ``server``. Providers are closed after the test."""
    made: list[LLMProvider] = []

    def _build(
        provider: str, *, base_url: str | None = None, api_key: str | None = SECRET_KEY, timeout_seconds: float = 30
    ) -> LLMProvider:
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(server.handler))
        p = make_provider(
            provider, "test-model", api_key=api_key, base_url=base_url, timeout_seconds=timeout_seconds,
            http_client=client,
        )
        made.append(p)
        return p

    yield _build
    for p in made:
        await p.aclose()


def simple_request(text: str = "I open the door.", **overrides: Any) -> LLMRequest:
    fields: dict[str, Any] = {
        "system": "You are the Dungeon Master.",
        "messages": (Message("user", text),),
        "max_tokens": 300,
    }
    fields.update(overrides)
    return LLMRequest(**fields)


async def collect(provider: LLMProvider, request: LLMRequest) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


async def collect_until_error(provider: LLMProvider, request: LLMRequest) -> tuple[list[StreamItem], ProviderError]:
    """The items yielded before the stream failed, and the ProviderError it failed with."""
    items: list[StreamItem] = []
    with pytest.raises(ProviderError) as caught:
        async for item in provider.stream(request):
            items.append(item)
    return items, caught.value


def assert_user_safe(error: ProviderError) -> None:
    """A message a user may see: short, and nothing secret or raw from the wire in it."""
    for text in (error.message, str(error), repr(error)):
        assert SECRET_KEY not in text
        assert "sk-" not in text
        assert "Bearer" not in text and "{" not in text
    assert len(error.message) < 120
