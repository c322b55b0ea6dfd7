"""PostgreSQL for tests: one uniquely named database per test session (dropped after), one schema per test.

The server is ``$DM_TEST_POSTGRES_URL`` (default: the development machines' and CI's 127.0.0.1:5432, trust
auth, database ``test``, which is only used to create and drop ours). Without a server the PostgreSQL tests skip
with the reason; in CI (``CI=true``) they fail instead, so a green CI always means both backends ran.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

SERVER_URL = os.environ.get("DM_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


def _run(make_coroutine):
    """Run a coroutine on a loop of its own, in a thread (a test's loop may be running already)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL is not available ({reason}); start it (127.0.0.1:5432) or set DM_TEST_POSTGRES_URL")


def with_database(url: str, database: str, **params: str) -> str:
    base = url.partition("?")[0].rpartition("/")[0]
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{base}/{database}" + (f"?{query}" if query else "")


class ScratchDatabase:
    """A database of our own on the server; ``schema_url()`` gives a fresh, empty schema inside it."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"dm_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = with_database(server_url, self.name)

    async def create(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.server_url, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.server_url, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def schema_url(self) -> str:
        import asyncpg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
        return with_database(self.url, self.name, search_path=schema)


@pytest.fixture(scope="session")
def postgres_database():
    """The session's own database (created on first use, dropped at the end), or a skip (a failure in CI)."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        unavailable("asyncpg is not installed")
    database = ScratchDatabase(SERVER_URL)
    try:
        _run(database.create)
    except Exception as error:  # refused, unknown host, no permission to create databases
        unavailable(f"{type(error).__name__}: {error}")
    yield database
    _run(database.drop)


@pytest.fixture
def postgres_url(postgres_database) -> str:
    """A URL to an empty schema of the session's database, for one test (a plain fixture, so that async and
    sync fixtures can both ask for it)."""
    return _run(postgres_database.schema_url)
