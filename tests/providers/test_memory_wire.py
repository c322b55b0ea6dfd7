"""Campaign memory on the wire, through the real SDKs (httpx2.MockTransport): context-overflow answers of every
kind become ``context_overflow``, a turn that met one succeeds with a shorter request, the volatile block sits
after the cache breakpoint, and the summary call uses the summary model without cache breakpoints."""

from __future__ import annotations

import json

import pytest

from bot.dm.events import Done
from bot.dm.guards import RetryPolicy
from bot.dm.service import DMService
from bot.llm.base import LLMRequest, Message
from bot.store.sqlite import SQLiteStore
from tests.fakes import FakeSleep, ScriptedProvider, reply
from tests.unit.campaign import ARIA, HALL
from tests.unit.conftest import make_config

from .conftest import assert_user_safe, collect, collect_until_error, simple_request

ANTHROPIC_TOO_LONG = {"type": "error", "error": {"type": "invalid_request_error",
                                                 "message": "prompt is too long: 210512 tokens > 200000 maximum"}}
OPENAI_TOO_LONG = {"error": {"message": "This model's maximum context length is 128000 tokens. However, your "
                                        "messages resulted in 130211 tokens. Please reduce the length of the "
                                        "messages.", "type": "invalid_request_error", "param": "messages",
                             "code": "context_length_exceeded"}}
LLAMA_CPP_TOO_LONG = {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                                        "increasing it", "type": "exceed_context_size_error"}}
VLLM_TOO_LONG = {"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you "
                                               "requested 5120 tokens in the messages.", "type": "BadRequestError",
                 "param": None, "code": 400}
OLLAMA_TOO_LONG = {"error": {"message": "prompt is too long for the context window (8192)", "type": "api_error"}}


@pytest.mark.parametrize("provider, body", [
    ("anthropic", ANTHROPIC_TOO_LONG),
    ("openai", OPENAI_TOO_LONG),
    ("openai", LLAMA_CPP_TOO_LONG),
    ("openai", VLLM_TOO_LONG),
    ("openai", OLLAMA_TOO_LONG),
])
async def test_prompt_too_long_answers_are_context_overflow(server, build, provider, body):
    server.error(400, body)
    _, error = await collect_until_error(build(provider, base_url=None), simple_request())
    assert (error.kind, error.retryable, error.status) == ("context_overflow", False, 400)
    assert "too long" in error.message and "130211" not in error.message and "210512" not in error.message
    assert_user_safe(error)


@pytest.mark.parametrize("provider, body", [
    ("anthropic", {"type": "error", "error": {"type": "invalid_request_error", "message": "roles must alternate"}}),
    ("openai", {"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error",
                          "code": "invalid_value"}}),
])
async def test_other_bad_requests_stay_bad_requests(server, build, provider, body):
    server.error(400, body)
    _, error = await collect_until_error(build(provider), simple_request())
    assert error.kind == "bad_request"


async def test_volatile_text_comes_after_the_cache_breakpoint(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")
    request = LLMRequest("sys", (Message("user", "opening"), Message("assistant", "scene"),
                                 Message("user", "Aria: I look.")), 100, volatile="[party] Aria 7/12 HP")
    await collect(provider, request)
    last = server.last_json["messages"][-1]["content"]
    assert [b["text"] for b in last] == ["Aria: I look.", "[party] Aria 7/12 HP"]
    assert "cache_control" in last[0] and "cache_control" not in last[1]

    openai = build("openai")
    server.sse("openai_text.sse")
    await collect(openai, request)
    assert server.last_json["messages"][-1] == {"role": "user", "content": "Aria: I look.\n\n[party] Aria 7/12 HP"}


async def test_summary_requests_use_their_model_and_no_cache(server, build):
    provider = build("anthropic")
    server.sse("anthropic_text.sse")
    await collect(provider, simple_request(model="claude-haiku-4-5", cache=False))
    body = server.last_json
    assert body["model"] == "claude-haiku-4-5"
    assert "cache_control" not in json.dumps(body)


async def test_a_turn_that_overflows_once_succeeds_with_a_shorter_request_through_the_sdk(server, build, tmp_path):
    config = make_config(limits={"requests_per_minute": 10_000}, memory={"summaries": False},
                         dm={"history_messages": 60})
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    scripted = DMService(config, store, ScriptedProvider(default=lambda r: reply("The DM answers " + "at length " * 40)))
    for events in [scripted.start(HALL, ARIA, "a heist")] + [scripted.act(HALL, ARIA, f"I act {n}.") for n in range(20)]:
        assert isinstance([e async for e in events][-1], Done)

    service = DMService(config, store, build("anthropic"), retry=RetryPolicy(config.retry, sleep=FakeSleep()))
    server.error(400, ANTHROPIC_TOO_LONG).sse("anthropic_text.sse")
    events = [e async for e in service.act(HALL, ARIA, "I open the vault.")]
    assert isinstance(events[-1], Done)
    failed, retried = (json.loads(r.content) for r in server.requests)
    assert len(retried["messages"]) < len(failed["messages"])
    assert len(json.dumps(retried)) < len(json.dumps(failed)) * 0.75
    assert retried["messages"][-1]["content"][-1]["text"] == "Aria: I open the vault."
    await store.close()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_summaries_through_a_real_local_server(llmock, provider, tmp_path):
    """The running summary over a real socket (llmock): the fold is one more call, on the summary model; its
    text is stored, reaches the next narration request, and the ledger has it."""
    from bot.llm import make_provider

    config = make_config(limits={"requests_per_minute": 10_000}, dm={"history_messages": 4},
                         memory={"summary_model": "cheap-model"})
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    client = make_provider(provider, "dm-model", api_key=None, base_url=llmock.base_url(provider), timeout_seconds=5)
    service = DMService(config, store, client, retry=RetryPolicy(config.retry, sleep=FakeSleep()))
    llmock.reply("KEY FACTS\n- Oswin: the innkeeper\nSTORY SO FAR\nThe party met Oswin.", times=None)
    try:
        assert isinstance([e async for e in service.start(HALL, ARIA, "a heist")][-1], Done)
        for n in range(3):
            assert isinstance([e async for e in service.act(HALL, ARIA, f"I act {n}.")][-1], Done)
            await service.memory.settle()
        session = await store.active_session("hall")
        state = await store.summary(session.id)
        assert state is not None and "Oswin: the innkeeper" in state.text
        models = [row[0] for row in await store.db.execute_fetchall(
            "SELECT model FROM usage WHERE session_id = ? ORDER BY id", (session.id,))]
        assert models.count("cheap-model") >= 1 and models.count("dm-model") == 4
        assert isinstance([e async for e in service.act(HALL, ARIA, "I act again.")][-1], Done)
        records = llmock.requests
        assert [r.model for r in records].count("cheap-model") == models.count("cheap-model")
        assert "- Oswin: the innkeeper" in json.dumps(records[-1].body)
    finally:
        await service.aclose()
        await client.aclose()
        await store.close()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_model_with_a_small_context_never_gets_the_adventure_stuck(llmock, provider, tmp_path):
    """A real server whose context window is smaller than ``max_prompt_tokens``: the first turn past it overflows
    once and is answered with a shorter request; every later turn fits the learnt size at once."""
    from bot.llm import make_provider

    config = make_config(limits={"requests_per_minute": 10_000}, memory={"summaries": False},
                         dm={"history_messages": 60})
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    client = make_provider(provider, "dm-model", api_key=None, base_url=llmock.base_url(provider), timeout_seconds=5)
    service = DMService(config, store, client, retry=RetryPolicy(config.retry, sleep=FakeSleep()))
    llmock.reply("The DM answers " + "at some length " * 30, times=None).limits(context_window=2500)
    try:
        assert isinstance([e async for e in service.start(HALL, ARIA, "a heist")][-1], Done)
        for n in range(16):
            events = [e async for e in service.act(HALL, ARIA, f"I act {n}, " + "carefully " * 30)]
            assert isinstance(events[-1], Done), (n, events)
        statuses = [r.status for r in llmock.requests]
        assert statuses.count(400) >= 1 and statuses[-5:] == [200] * 5
    finally:
        await service.aclose()
        await client.aclose()
        await store.close()
