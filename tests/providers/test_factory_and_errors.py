"""make_provider wiring and the shared error helpers (Retry-After parsing, status mapping)."""

from __future__ import annotations

import ast
import email.utils
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

import bot.llm
from bot.llm import make_provider
from bot.llm.base import LLMProvider
from bot.llm.errors import parse_retry_after, status_error

from .conftest import collect, simple_request


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_providers_satisfy_the_protocol_and_name_themselves(provider):
    p = make_provider(provider, "some-model", api_key="k", base_url=None, timeout_seconds=30)
    try:
        assert isinstance(p, LLMProvider)
        assert (p.name, p.model, p.base_url) == (provider, "some-model", None)
    finally:
        await p.aclose()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_official_api_without_key_is_refused_at_startup(provider):
    with pytest.raises(ValueError, match="API key"):
        make_provider(provider, "m", api_key=None, base_url=None, timeout_seconds=30)


def test_unknown_provider_and_bad_timeout_are_refused():
    with pytest.raises(ValueError, match="unknown LLM provider"):
        make_provider("gemini", "m", api_key="k", base_url=None, timeout_seconds=30)
    with pytest.raises(ValueError, match="timeout"):
        make_provider("openai", "m", api_key="k", base_url=None, timeout_seconds=0)


@pytest.mark.parametrize(("provider", "url"), [
    ("anthropic", "https://api.anthropic.com/v1/messages"),
    ("openai", "https://api.openai.com/v1/chat/completions"),
])
async def test_environment_base_urls_do_not_redirect_traffic(server, build, monkeypatch, provider, url):
    # Only config decides where the key goes: the SDKs' env fallbacks are bypassed.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://evil.example")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://evil.example/v1")
    p = build(provider)
    server.sse(f"{provider}_text.sse")

    await collect(p, simple_request())

    assert str(server.requests[-1].url) == url


async def test_connect_timeout_is_capped_at_ten_seconds(server, build):
    p = build("openai", timeout_seconds=90)
    server.sse("openai_text.sse")

    await collect(p, simple_request())

    assert server.requests[-1].extensions["timeout"] == {"connect": 10, "read": 90, "write": 90, "pool": 90}


async def test_aclose_closes_the_http_client():
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(500)))
    p = make_provider("anthropic", "m", api_key="k", base_url=None, timeout_seconds=5, http_client=client)

    await p.aclose()

    assert client.is_closed


NOW = 1_760_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # ms first: more precise
        ({"Retry-After": "7"}, 7.0),  # header names are case-insensitive
        ({"retry-after": "1.5"}, 1.5),  # non-standard floats tolerated
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),  # HTTP date
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),  # a past date means now
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),  # unusable ms falls back
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "whenever"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "error_type", "error_code", "kind", "retryable"),
    [
        (408, None, None, "server", True),
        (409, None, None, "server", True),
        (500, None, None, "server", True),
        (502, None, None, "server", True),
        (429, "rate_limit_error", None, "rate_limited", True),
        (429, "insufficient_quota", "insufficient_quota", "quota", False),
        (402, "billing_error", None, "quota", False),
        (529, "overloaded_error", None, "overloaded", True),
        (503, "overloaded_error", None, "overloaded", True),
        (400, "invalid_request_error", None, "bad_request", False),
        (404, "not_found_error", None, "bad_request", False),
        (413, "request_too_large", None, "bad_request", False),
        (422, None, None, "bad_request", False),
        (401, "authentication_error", None, "auth", False),
        (403, "permission_error", None, "auth", False),
    ],
)
def test_status_mapping_table(status, error_type, error_code, kind, retryable):
    error = status_error(
        "Anthropic", status, error_type=error_type, error_code=error_code, headers={"retry-after": "2"}
    )

    assert (error.kind, error.retryable, error.status) == (kind, retryable, status)
    # Retry-After is passed on only where waiting can help.
    assert error.retry_after == (2.0 if retryable else None)
    assert error.message.endswith(f"({status})")


def test_base_and_pricing_load_no_sdk():
    """The DM service and its unit tests import bot.llm.base and pricing: they must not pay for two SDKs."""
    code = (
        "import sys, bot.llm, bot.llm.base, bot.llm.pricing\n"
        "assert 'anthropic' not in sys.modules and 'openai' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_bot_llm_imports_only_its_sdks():
    """No discord (or any other layer of the bot) below bot/llm: the layer must work without Discord."""
    allowed = {"anthropic", "openai", "httpx2", "anyio", "bot"}
    llm_dir = Path(bot.llm.__file__).parent
    for path in llm_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, f"{path.name} imports {name}"
                assert top != "bot" or name.startswith("bot.llm"), f"{path.name} imports {name}"
