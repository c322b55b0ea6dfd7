"""Suite-wide options. The long reliability and load runs are marked ``soak``: they run with ``make soak``
(``--run-soak``) and are skipped, with that reason, by ``make test``."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", default=False, help="run the long soak tests (make soak)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long reliability/load test, run by `make soak` only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run it with `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def redis_url() -> str:
    """The local Redis (127.0.0.1:6379). Absent: the test is skipped with the reason, except in CI (CI=true),
    whose .ci/run starts Redis, where its absence is a failure."""
    import os
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not running on 127.0.0.1:6379, and CI's .ci/run should have started it")
        pytest.skip("Redis is not running on 127.0.0.1:6379 (start it: redis-server --daemonize yes)")
    return "redis://127.0.0.1:6379"


from tests.pgdb import postgres_database, postgres_url  # noqa: E402,F401  (fixtures for every test folder)
