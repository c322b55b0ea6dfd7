"""The shared services some tests need: Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (trust auth).

Outside CI a missing service skips the test with a message saying what to start; in CI (``CI=true``, where
``.ci/run`` starts both) it fails instead, so a broken service can never pass as a skip. Other test runs share
these servers: every test gets its own Redis key prefix and its own PostgreSQL database, and drops only that.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = os.environ.get("DM_TEST_PG_DSN", f"postgresql://root@{PG_HOST}:{PG_PORT}/test")
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def require(service: str) -> None:
    """Skip (outside CI) or fail (CI=true) when ``service`` ("redis" or "postgresql") is not listening."""
    host, port, start = {
        "redis": (REDIS_HOST, REDIS_PORT, "redis-server --daemonize yes --port 6379 --save ''"),
        "postgresql": (PG_HOST, PG_PORT, "pg_ctlcluster <version> main start (or .ci/run)"),
    }[service]
    if _listening(host, port):
        return
    message = f"{service} is not listening on {host}:{port}; start it with: {start}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def unique(prefix: str) -> str:
    """A name no other test run uses: for Redis key prefixes and PostgreSQL database names."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def pg_dsn(database: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"


@asynccontextmanager
async def fresh_database(prefix: str = "dmtest") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test; yields its URL and drops it afterwards (it only)."""
    require("postgresql")
    import asyncpg

    name = unique(prefix)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_dsn(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
