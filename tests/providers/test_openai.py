"""OpenAIProvider through the real openai SDK, served real SSE bodies by httpx2.MockTransport."""

from __future__ import annotations

import httpx2
import pytest

from bot.llm.base import Finish, LLMRequest, Message, TextChunk, ToolCall, ToolResult, ToolSpec, Usage

from .conftest import SECRET_KEY, assert_user_safe, collect, collect_until_error, simple_request

ROLL = ToolSpec(
    "roll_dice",
    "Roll dice for a character.",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)


async def test_text_stream_yields_text_then_usage_then_finish(server, build):
    provider = build("openai")
    server.sse("openai_text.sse")

    items = await collect(provider, simple_request())

    assert items == [
        TextChunk("The door creaks open. "),
        TextChunk("A red dragon 🐉 stirs in the dark"),
        TextChunk(" — café-au-lait scales."),
        # 2006 prompt tokens of which 1920 cached: input excludes the cached ones.
        Usage(input_tokens=86, output_tokens=19, cache_read_tokens=1920),
        Finish("stop"),
    ]


async def test_body_cut_at_arbitrary_bytes_gives_the_same_items(server, build):
    provider = build("openai")
    server.sse("openai_text.sse").sse("openai_text.sse", chunk_size=5)

    assert await collect(provider, simple_request()) == await collect(provider, simple_request())


async def test_tool_call_deltas_are_assembled_by_index(server, build):
    provider = build("openai")
    server.sse("openai_tool_calls.sse")

    items = await collect(provider, simple_request(tools=(ROLL,)))

    assert items == [
        TextChunk("Let me roll for that."),
        ToolCall("call_DdmO9pD3xa9XTPNJ32zg2hcA", "roll_dice", {"expression": "1d20+5", "for_whom": "Mira"}),
        ToolCall("call_ABc8fQe1nXvQ4yZk2mR7sT0u", "roll_dice", {}, malformed=True),  # not valid JSON
        Usage(input_tokens=512, output_tokens=41),
        Finish("tool_calls"),
    ]


async def test_parallel_tool_calls_that_all_say_index_0_are_separate_calls(server, build):
    """Ollama numbers every tool call 0: a new call id at an index in use starts a new call (issue 9 item 5)."""
    provider = build("openai", base_url="http://127.0.0.1:11434/v1")
    server.sse("openai_ollama_parallel_tools.sse")

    items = await collect(provider, simple_request(tools=(ROLL,)))

    assert items == [
        ToolCall("call_k3n8yq1a", "roll_dice", {"notation": "1d20+4", "reason": "goblin attacks Aria"}),
        ToolCall("call_p0v2c7xd", "roll_dice", {"notation": "1d6+2", "reason": "goblin damage"}),
        Usage(input_tokens=388, output_tokens=52),
        Finish("tool_calls"),
    ]


async def test_a_refused_temperature_is_recognised_from_the_servers_words(server, build):
    """OpenAI's reasoning models answer 400 for a temperature; the words stay out of the user's message."""
    from bot.llm.base import refused_parameter

    provider = build("openai")
    server.error(400, {"error": {"message": "Unsupported value: 'temperature' does not support 0.8 with this "
                                            "model. Only the default (1) value is supported.",
                                 "type": "invalid_request_error", "param": "temperature",
                                 "code": "unsupported_value"}})
    _, error = await collect_until_error(provider, simple_request())
    assert refused_parameter(error, "temperature") and "temperature" not in error.message


async def test_request_body_for_api_openai_com(server, build):
    provider = build("openai")
    server.sse("openai_text.sse")
    request = LLMRequest(
        system="You are the Dungeon Master.",
        messages=(
            Message("user", "I open the door."),
            Message("assistant", "Roll for it.", tool_calls=(ToolCall("call_1", "roll_dice", {"expression": "1d20"}),)),
            Message("user", tool_results=(ToolResult("call_1", "bad dice expression", is_error=True),)),
            Message("user", "Mira: I also listen at the door."),  # two user turns in a row: merged
        ),
        max_tokens=512,
        tools=(ROLL,),
    )

    await collect(provider, request)

    body = server.last_json
    assert server.requests[-1].url == "https://api.openai.com/v1/chat/completions"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 512 and "max_tokens" not in body
    assert "temperature" not in body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "roll_dice", "description": "Roll dice for a character.",
                                          "parameters": ROLL.parameters}}
    ]
    assert body["messages"] == [
        {"role": "system", "content": "You are the Dungeon Master."},
        {"role": "user", "content": "I open the door."},
        {
            "role": "assistant",
            "content": "Roll for it.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "roll_dice", "arguments": '{"expression": "1d20"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: bad dice expression"},
        {"role": "user", "content": "Mira: I also listen at the door."},
    ]


async def test_consecutive_user_texts_are_joined_into_one_message(server, build):
    provider = build("openai")
    server.sse("openai_text.sse")

    await collect(provider, simple_request(messages=(Message("user", "Ana: I hide."), Message("user", "Bo: I wait."))))

    assert server.last_json["messages"][1:] == [{"role": "user", "content": "Ana: I hide.\n\nBo: I wait."}]


async def test_local_server_gets_max_tokens_and_temperature(server, build):
    provider = build("openai", base_url="http://localhost:11434/v1", api_key=None)
    server.sse("openai_local_no_usage.sse")

    items = await collect(provider, simple_request(temperature=0.8))

    body = server.last_json
    assert server.requests[-1].url == "http://localhost:11434/v1/chat/completions"
    assert body["max_tokens"] == 300 and "max_completion_tokens" not in body
    assert body["temperature"] == 0.8
    # No key configured: a placeholder is sent, so the SDK does not refuse to start.
    assert server.requests[-1].headers["authorization"] == "Bearer no-key-needed"
    # A server that sends no usage chunk: no Usage at all (the caller keeps its estimate), still a Finish.
    assert items == [TextChunk("Roll initiative."), Finish("length")]


async def test_error_chunk_mid_stream(server, build):
    provider = build("openai")
    server.sse("openai_error_midstream.sse")

    items, error = await collect_until_error(provider, simple_request())

    assert TextChunk("The goblin") in items
    assert (error.kind, error.retryable, error.status) == ("stream", True, None)
    assert_user_safe(error)


async def test_malformed_json_in_stream(server, build):
    provider = build("openai")
    server.sse("openai_malformed.sse")

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable) == ("stream", True)


async def test_stream_without_finish_reason_is_truncated(server, build):
    provider = build("openai")
    server.sse("openai_truncated.sse")

    items, error = await collect_until_error(provider, simple_request())

    assert TextChunk("The goblin raises") in items
    assert not any(isinstance(i, Finish) for i in items)
    assert (error.kind, error.retryable) == ("truncated", True)


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (httpx2.RemoteProtocolError("peer closed connection without sending complete message body"), "connection"),
        (httpx2.ReadTimeout("timed out"), "timeout"),
    ],
)
async def test_transport_errors_mid_stream_are_mapped(server, build, raised, kind):
    provider = build("openai")
    server.sse("openai_truncated.sse", error=raised)

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable) == (kind, True)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable", "retry_after", "message"),
    [
        (429, {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": None,
                         "code": "rate_limit_exceeded"}},
         {"retry-after-ms": "1500", "retry-after": "2"}, "rate_limited", True, 1.5,
         "OpenAI is rate limiting requests (429)"),
        (429, {"error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
         {"retry-after": "20"}, "rate_limited", True, 20.0, None),
        (429, {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                         "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}},
         {}, "quota", False, None, "OpenAI says the account's quota or spend limit is used up (429)"),
        (503, {"error": {"message": "The engine is currently overloaded", "type": "server_error", "param": None,
                         "code": None}}, {"retry-after": "3"}, "server", True, 3.0, "OpenAI had a server error (503)"),
        (400, {"error": {"message": "Invalid 'messages'", "type": "invalid_request_error", "param": "messages",
                         "code": None}}, {}, "bad_request", False, None, "OpenAI refused the request (400)"),
        (404, {"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error", "param": None,
                         "code": "model_not_found"}}, {}, "bad_request", False, None, None),
        (401, {"error": {"message": f"Incorrect API key provided: {SECRET_KEY[:8]}****9c.",
                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
         {}, "auth", False, None, "OpenAI rejected the API key (401)"),
    ],
)
async def test_http_errors_map_to_provider_errors(server, build, status, body, headers, kind, retryable,
                                                  retry_after, message):
    provider = build("openai")
    server.error(status, body, headers)

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable, error.status, error.retry_after) == (kind, retryable, status, retry_after)
    if message is not None:
        assert error.message == message
    assert_user_safe(error)
    assert len(server.requests) == 1  # max_retries=0


async def test_abandoning_the_stream_closes_the_response(server, build):
    provider = build("openai")
    server.sse("openai_text.sse", chunk_size=64)

    stream = provider.stream(simple_request())
    async for item in stream:
        if isinstance(item, TextChunk):
            break
    await stream.aclose()

    assert server.streams[-1].closed
