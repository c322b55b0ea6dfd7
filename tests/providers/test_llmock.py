"""Both providers against a real local LLM server (llmock) over a real socket: what a stream looks like when
the connection really drops, stalls or is rate limited. The ``llmock`` fixture comes from llmock's pytest
plugin; it resets the server's script for every test."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest

from bot.llm import make_provider
from bot.llm.base import Finish, LLMProvider, Message, TextChunk, ToolCall, ToolResult, ToolSpec, Usage

from .conftest import assert_user_safe, collect, collect_until_error, simple_request

PROVIDERS = ["anthropic", "openai"]

ROLL = ToolSpec("roll_dice", "Roll dice.", {"type": "object", "properties": {"expression": {"type": "string"}}})


@pytest.fixture
async def connect(llmock) -> AsyncIterator[Callable[..., LLMProvider]]:
    made: list[LLMProvider] = []

    def _connect(provider: str, *, timeout_seconds: float = 5) -> LLMProvider:
        # No key: a local server needs none, and make_provider sends a placeholder.
        p = make_provider(provider, "dm-model", api_key=None, base_url=llmock.base_url(provider),
                          timeout_seconds=timeout_seconds)
        made.append(p)
        return p

    yield _connect
    for p in made:
        await p.aclose()


def text_of(items) -> str:
    return "".join(i.text for i in items if isinstance(i, TextChunk))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_scripted_reply_streams_text_and_usage(llmock, connect, provider):
    llmock.reply("The torch gutters as the crypt door grinds open.")

    items = await collect(connect(provider), simple_request())

    assert text_of(items) == "The torch gutters as the crypt door grinds open."
    assert len([i for i in items if isinstance(i, TextChunk)]) > 1  # really streamed, piece by piece
    usages = [i for i in items if isinstance(i, Usage)]
    assert usages and usages[-1].input_tokens > 0 and usages[-1].output_tokens > 0
    assert items[-1] == Finish("stop")
    body = llmock.last_request.body
    assert body["stream"] is True
    if provider == "openai":
        assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 300


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_call_round_trip(llmock, connect, provider):
    p = connect(provider)
    llmock.call_tool("roll_dice", {"expression": "1d20+2"})

    items = await collect(p, simple_request(tools=(ROLL,)))

    calls = [i for i in items if isinstance(i, ToolCall)]
    assert [(c.name, c.arguments, c.malformed) for c in calls] == [("roll_dice", {"expression": "1d20+2"}, False)]
    assert items[-1] == Finish("tool_calls")

    # The answer to the call goes back in the provider's own shape; llmock then answers in text.
    follow_up = simple_request(
        tools=(ROLL,),
        messages=(
            Message("user", "I attack."),
            Message("assistant", tool_calls=(calls[0],)),
            Message("user", tool_results=(ToolResult(calls[0].id, "17"),)),
        ),
    )
    items = await collect(p, follow_up)
    assert text_of(items) and items[-1] == Finish("stop")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_broken_tool_arguments_are_flagged(llmock, connect, provider):
    llmock.call_tool("roll_dice", {"expression": "1d20+2"}).break_tool_call("malformed_arguments")

    items = await collect(connect(provider), simple_request(tools=(ROLL,)))

    assert [(c.name, c.malformed) for c in items if isinstance(c, ToolCall)] == [("roll_dice", True)]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_disconnect_mid_stream(llmock, connect, provider):
    llmock.reply("One two three four five six seven eight nine ten.").disconnect(after_chunks=4)

    items, error = await collect_until_error(connect(provider), simple_request())

    assert text_of(items)  # some narration had arrived before the drop
    assert (error.kind, error.retryable) == ("connection", True)
    assert_user_safe(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_clean_but_early_end_of_stream_is_truncated(llmock, connect, provider):
    llmock.reply("One two three four five six seven eight nine ten.").truncate(after_chunks=4)

    _, error = await collect_until_error(connect(provider), simple_request())

    assert (error.kind, error.retryable) == ("truncated", True)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limited_with_retry_after(llmock, connect, provider):
    llmock.rate_limit(retry_after=0.25)

    _, error = await collect_until_error(connect(provider), simple_request())

    assert (error.kind, error.retryable, error.status) == ("rate_limited", True, 429)
    assert error.retry_after == 0.25  # from retry-after-ms; retry-after alone would say 1
    assert len(llmock.requests) == 1  # the SDK did not retry on its own


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_overloaded_529(llmock, connect, provider):
    llmock.fail(529)

    _, error = await collect_until_error(connect(provider), simple_request())

    assert (error.kind, error.retryable, error.status) == ("overloaded", True, 529)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stalled_stream_times_out_after_the_configured_silence(llmock, connect, provider):
    # anthropic lets the raw httpx2.ReadTimeout escape mid-stream; openai wraps it in APITimeoutError.
    llmock.reply("One two three four five six.").stall(after_chunks=4, seconds=5)

    items, error = await collect_until_error(connect(provider, timeout_seconds=1.0), simple_request())

    assert text_of(items)
    assert (error.kind, error.retryable) == ("timeout", True)


async def test_nothing_listening_is_a_connection_error():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    p = make_provider("anthropic", "m", api_key=None, base_url=f"http://127.0.0.1:{port}", timeout_seconds=2)
    try:
        _, error = await collect_until_error(p, simple_request())
    finally:
        await p.aclose()

    assert (error.kind, error.retryable) == ("connection", True)
    # Players read this message: it names no host or port (issue 9 item 13); the operator's log has them.
    assert error.message == "could not connect to the model server"
    assert p.endpoint == f"127.0.0.1:{port}"
