"""LLM providers behind one small streaming interface (see ``bot.llm.base``), and the factory that builds them.

The SDKs are imported inside ``make_provider`` only: ``bot.llm.base`` is imported by the DM service and its
unit tests, which should not pay for loading two SDKs they never call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx2

    from bot.llm.base import LLMProvider

__all__ = ["OFFICIAL_BASE_URLS", "PLACEHOLDER_API_KEY", "make_provider"]

# Passed explicitly when no base_url is configured, so that ANTHROPIC_BASE_URL / OPENAI_BASE_URL in the
# environment cannot silently send traffic (and the key) somewhere config.toml does not say.
OFFICIAL_BASE_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}

# Local servers (Ollama, llama.cpp, LM Studio) need no key, but both SDKs refuse to send a request without one.
PLACEHOLDER_API_KEY = "no-key-needed"


def make_provider(
    provider: str,
    model: str,
    *,
    api_key: str | None,
    base_url: str | None,
    timeout_seconds: float,
    http_client: httpx2.AsyncClient | None = None,
) -> LLMProvider:
    """Build the provider named ``provider`` ("anthropic" or "openai").

    - ``base_url`` points at an Anthropic- or OpenAI-compatible server; None means the official API.
    - ``api_key`` None is allowed only with a ``base_url`` (a placeholder is sent). The key is always passed
      explicitly, so the SDKs never fall back to environment variables or credential files on their own.
    - ``timeout_seconds`` is the longest silence tolerated: the read timeout applies between two bytes of a
      stream, so a stalled stream fails after that long; connecting gets at most 10 s.
    - The SDKs' own retries are off (``max_retries=0``): the DM service's retry policy owns retries, and
      both layers retrying would multiply attempts.
    - ``http_client`` is for tests (``httpx2.MockTransport``) and shared connection pools.
    """
    import httpx2

    if timeout_seconds <= 0:
        raise ValueError("timeout_seconds must be positive")
    if provider not in OFFICIAL_BASE_URLS:
        raise ValueError(f"unknown LLM provider {provider!r}: expected 'anthropic' or 'openai'")
    if not api_key:
        if base_url is None:
            raise ValueError(f"an API key is needed for the official {provider} API (or set a base_url)")
        api_key = PLACEHOLDER_API_KEY
    timeout = httpx2.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds))
    common = {
        "api_key": api_key,
        "base_url": base_url or OFFICIAL_BASE_URLS[provider],
        "timeout": timeout,
        "max_retries": 0,
        "http_client": http_client,
    }
    if provider == "anthropic":
        import anthropic

        from bot.llm.anthropic_provider import AnthropicProvider

        return AnthropicProvider(anthropic.AsyncAnthropic(**common), model, base_url=base_url)

    import openai

    from bot.llm.openai_provider import OpenAIProvider

    return OpenAIProvider(openai.AsyncOpenAI(**common), model, base_url=base_url)
