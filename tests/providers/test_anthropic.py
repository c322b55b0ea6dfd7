"""AnthropicProvider through the real anthropic SDK, served real SSE bodies by httpx2.MockTransport."""

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


async def test_text_stream_yields_text_usage_and_finish(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")

    items = await collect(provider, simple_request())

    assert items == [
        Usage(input_tokens=25, output_tokens=1, cache_read_tokens=3400, cache_write_tokens=1200),
        TextChunk("The door creaks open. "),
        TextChunk("A red dragon 🐉 stirs in the dark"),
        TextChunk(" — café-au-lait scales."),
        # output_tokens at message_delta is the cumulative total, not an increment.
        Usage(input_tokens=25, output_tokens=19, cache_read_tokens=3400, cache_write_tokens=1200),
        Finish("stop"),
    ]


async def test_body_cut_at_arbitrary_bytes_gives_the_same_items(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse").sse("anthropic_text.sse", chunk_size=7)  # splits 🐉 and é mid-character

    whole = await collect(provider, simple_request())
    pieces = await collect(provider, simple_request())

    assert pieces == whole


async def test_tool_use_blocks_become_tool_calls_and_malformed_input_is_flagged(server, build):
    provider = build("anthropic")
    server.sse("anthropic_tool_use.sse")

    items = await collect(provider, simple_request(tools=(ROLL,)))

    assert [i for i in items if isinstance(i, TextChunk)] == [TextChunk("Let me roll for that.")]
    assert [i for i in items if isinstance(i, ToolCall)] == [
        ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "roll_dice", {"expression": "1d20+5", "for_whom": "Mira"}),
        ToolCall("toolu_01Bn7bmJW2g8HxK3bQFq9c2P", "roll_dice", {}, malformed=True),  # JSON cut off
        ToolCall("toolu_01C9fGdVYb2wkq5oJcX3mJtR", "look_around", {}),  # no input at all: not malformed
    ]
    assert items[-2] == Usage(input_tokens=472, output_tokens=89)
    assert items[-1] == Finish("tool_calls")


async def test_request_body_caches_system_and_conversation_prefix(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")
    request = LLMRequest(
        system="You are the Dungeon Master.",
        messages=(
            Message("user", "I open the door."),
            Message(
                "assistant", "Roll for it.", tool_calls=(ToolCall("toolu_1", "roll_dice", {"expression": "1d20"}),)
            ),
            Message("user", tool_results=(ToolResult("toolu_1", "bad dice expression", is_error=True),)),
            Message("user", "Mira: I also listen at the door."),  # two user turns in a row: merged
        ),
        max_tokens=512,
        tools=(ROLL,),
    )

    await collect(provider, request)

    body = server.last_json
    assert body["stream"] is True
    assert body["model"] == "test-model" and body["max_tokens"] == 512
    assert body["system"] == [
        {"type": "text", "text": "You are the Dungeon Master.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tools"] == [
        {"name": "roll_dice", "description": "Roll dice for a character.", "input_schema": ROLL.parameters}
    ]
    assert "temperature" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "I open the door."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Roll for it."},
                {"type": "tool_use", "id": "toolu_1", "name": "roll_dice", "input": {"expression": "1d20"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "bad dice expression", "is_error": True},
                {"type": "text", "text": "Mira: I also listen at the door.", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]


async def test_merged_user_message_puts_tool_results_before_text(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")
    request = simple_request(
        messages=(
            Message("assistant", tool_calls=(ToolCall("toolu_9", "roll_dice", {}),)),
            Message("user", "Wait!"),
            Message("user", tool_results=(ToolResult("toolu_9", "17"),)),
        )
    )

    await collect(provider, request)

    last = server.last_json["messages"][-1]
    assert [block["type"] for block in last["content"]] == ["tool_result", "text"]
    # The cache breakpoint stays on the last block, whatever it is.
    assert "cache_control" in last["content"][-1]
    assert sum("cache_control" in b for m in server.last_json["messages"] for b in m["content"]) == 1


async def test_temperature_is_sent_only_when_set(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")

    await collect(provider, simple_request(temperature=0.7))

    assert server.last_json["temperature"] == 0.7


async def test_overloaded_error_event_mid_stream(server, build):
    provider = build("anthropic")
    server.sse("anthropic_overloaded_midstream.sse")

    items, error = await collect_until_error(provider, simple_request())

    assert TextChunk("The goblin") in items
    assert (error.kind, error.retryable, error.status) == ("overloaded", True, None)
    assert error.message == "Anthropic is overloaded (mid-stream)"


async def test_malformed_json_in_stream(server, build):
    provider = build("anthropic")
    server.sse("anthropic_malformed.sse")

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable) == ("stream", True)


async def test_stream_that_ends_without_message_stop_is_truncated(server, build):
    provider = build("anthropic")
    server.sse("anthropic_truncated.sse")

    items, error = await collect_until_error(provider, simple_request())

    assert TextChunk("The goblin raises") in items
    assert not any(isinstance(i, Finish) for i in items)
    assert (error.kind, error.retryable) == ("truncated", True)


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (httpx2.RemoteProtocolError("peer closed connection without sending complete message body"), "connection"),
        (httpx2.ReadError("connection reset by peer"), "connection"),
        (httpx2.ReadTimeout("timed out"), "timeout"),
    ],
)
async def test_raw_transport_errors_escaping_mid_stream_are_mapped(server, build, raised, kind):
    # The anthropic SDK wraps transport errors only while sending; mid-stream the raw httpx2 error escapes.
    provider = build("anthropic")
    server.sse("anthropic_truncated.sse", error=raised)

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable) == (kind, True)
    assert error.__cause__ is raised


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable", "retry_after", "message"),
    [
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}},
         {"retry-after": "7"}, "rate_limited", True, 7.0, "Anthropic is rate limiting requests (429)"),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
         {"retry-after-ms": "1500", "retry-after": "2"}, "rate_limited", True, 1.5, None),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
         {}, "overloaded", True, None, "Anthropic is overloaded (529)"),
        (500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
         {}, "server", True, None, "Anthropic had a server error (500)"),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "roles must alternate"}},
         {}, "bad_request", False, None, "Anthropic refused the request (400)"),
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
         {}, "auth", False, None, "Anthropic rejected the API key (401)"),
        (402, {"type": "error", "error": {"type": "billing_error", "message": "credit balance too low"}},
         {}, "quota", False, None, None),
    ],
)
async def test_http_errors_map_to_provider_errors(server, build, status, body, headers, kind, retryable,
                                                  retry_after, message):
    provider = build("anthropic")
    server.error(status, body, headers)

    _, error = await collect_until_error(provider, simple_request())

    assert (error.kind, error.retryable, error.status, error.retry_after) == (kind, retryable, status, retry_after)
    if message is not None:
        assert error.message == message
    assert_user_safe(error)
    assert len(server.requests) == 1  # max_retries=0: the SDK did not retry behind the DM service's back


async def test_request_carries_the_key_and_timeouts(server, build):
    provider = build("anthropic", timeout_seconds=3)
    server.sse("anthropic_text.sse")

    await collect(provider, simple_request())

    request = server.requests[-1]
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert SECRET_KEY in request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
    assert request.extensions["timeout"] == {"connect": 3, "read": 3, "write": 3, "pool": 3}


async def test_abandoning_the_stream_closes_the_response(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse", chunk_size=64)

    stream = provider.stream(simple_request())
    async for item in stream:
        if isinstance(item, TextChunk):
            break
    await stream.aclose()

    assert server.streams[-1].closed


async def test_a_refused_temperature_is_recognised_from_the_servers_words(server, build):
    from bot.llm.base import refused_parameter

    provider = build("anthropic")
    server.error(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "temperature: this model does not support the "
                                                             "temperature parameter"}})
    _, error = await collect_until_error(provider, simple_request())
    assert refused_parameter(error, "temperature") and "temperature" not in error.message
