"""The PostgreSQL test fixtures skip outside CI when the server is absent, and fail in CI (CI=true)."""

from __future__ import annotations

import pytest

from tests import pgdb


def test_absent_postgresql_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not available \\(refused\\)"):
        pgdb.unavailable("refused")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required in CI: refused"):
        pgdb.unavailable("refused")


def test_scratch_urls_keep_the_server_and_name_the_database():
    assert pgdb.with_database("postgresql://root@127.0.0.1:5432/test", "dm_x", search_path="t_1") == \
        "postgresql://root@127.0.0.1:5432/dm_x?search_path=t_1"
