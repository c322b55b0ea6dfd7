"""Wiring shared by every face: the store, the provider and the DM service, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.config import Config
from bot.dm.service import DMService
from bot.llm import make_provider
from bot.llm.base import LLMProvider
from bot.store import store_for


def llm_setup_problem(config: Config) -> str | None:
    """What is missing before the LLM can be called, as steps to follow; None when nothing is."""
    llm = config.llm
    if llm.base_url or config.secrets.llm_key(llm.provider):
        return None
    key = "ANTHROPIC_API_KEY" if llm.provider == "anthropic" else "OPENAI_API_KEY"
    example = "sk-ant-..." if llm.provider == "anthropic" else "sk-..."
    return (
        f"No API key for the {llm.provider} provider.\n"
        f"  Either set {key}: `export {key}={example}`, or put the line `{key}={example}` in a file named .env\n"
        f"  in the folder you start the bot from;\n"
        f"  or use a local OpenAI-compatible server instead, in {config.source if config.source != 'defaults' else 'config.toml'}:\n"
        f'    [llm]\n    provider = "openai"\n    model = "llama3.1"\n'
        f'    base_url = "http://localhost:11434/v1"   # Ollama; vLLM, llama.cpp and LM Studio work too'
    )


def build_provider(config: Config) -> LLMProvider:
    return make_provider(
        config.llm.provider,
        config.llm.model,
        api_key=config.secrets.llm_key(config.llm.provider),
        base_url=config.llm.base_url,
        timeout_seconds=config.llm.timeout_seconds,
    )


@asynccontextmanager
async def dm_engine(config: Config, *, provider: LLMProvider | None = None) -> AsyncIterator[DMService]:
    store = store_for(config.database.url)  # StoreError: one line for the operator
    await store.open()
    provider = provider or build_provider(config)
    service = DMService(config, store, provider)
    try:
        yield service
    finally:
        await service.aclose()  # outcome writes still in flight finish before the store closes
        await provider.aclose()
        await store.close()
