"""The database as the operator meets it at the command line (issue 9 item 12, issue 12): a corrupt, unreadable
or newer database stops `run`, `play` and `check` with one line and exit code 2, never a traceback; a URL's
password is never printed."""

from __future__ import annotations

import sqlite3

import pytest

from tests.e2e.test_cli import FAKE_KEY, FAKE_TOKEN, dm

ENV = {"DISCORD_TOKEN": FAKE_TOKEN, "ANTHROPIC_API_KEY": FAKE_KEY}


def _only_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "play", "check"])
def test_a_corrupt_database_file_stops_every_command_with_one_line(tmp_path, command):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dungeon-master.db").write_bytes(b"\x00garbage, not SQLite\n" * 300)
    line = _only_line(dm(command, cwd=tmp_path, env=ENV))
    assert line == "dungeon-master: cannot open the database data/dungeon-master.db: file is not a database"


def test_an_unreadable_database_path_stops_with_one_line(tmp_path):
    (tmp_path / "data" / "dungeon-master.db").mkdir(parents=True)  # a folder where the file should be
    line = _only_line(dm("play", cwd=tmp_path, env=ENV))
    assert line.startswith("dungeon-master: cannot open the database data/dungeon-master.db: ")


def test_a_database_from_a_newer_bot_is_refused_by_check(tmp_path):
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "dungeon-master.db") as db:
        db.execute("PRAGMA user_version = 999")
    line = _only_line(dm("check", cwd=tmp_path, env=ENV))
    assert "was written by a newer version of the bot (schema version 999" in line


def test_check_masks_a_database_password_from_the_environment(tmp_path):
    url = "postgresql://bot:pa55-w0rd-xyz@127.0.0.1:1/dm"  # nothing listens on port 1
    result = dm("check", cwd=tmp_path, env={**ENV, "DM_DATABASE_URL": url})
    assert "database:  postgresql://bot:***@127.0.0.1:1/dm" in result.stdout
    assert _only_line(result).startswith("dungeon-master: cannot open the database postgresql://bot:***@127.0.0.1:1/dm")
    assert "pa55-w0rd-xyz" not in result.stdout + result.stderr


def test_play_on_postgresql_from_dm_database_url(tmp_path, postgres_url):
    """The whole `play` face over PostgreSQL, the URL from the environment (one LLM call: llmock is slow)."""
    from llmock.testing import LLMockServer

    from tests.pgdb import _run

    with LLMockServer() as server:
        env = {"DM_LLM_PROVIDER": "openai", "DM_LLM_MODEL": "llama3", "DM_LLM_BASE_URL": server.url + "/v1",
               "DM_DATABASE_URL": postgres_url}
        result = dm("play", cwd=tmp_path, env=env, stdin="A drowned bell tower\n/roll 1d6\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data").exists()  # nothing went to SQLite

    async def story():
        from bot.store import store_for

        store = store_for(postgres_url)
        await store.open()
        try:
            session = await store.active_session("terminal")
            return [(t.role, t.status) for t in await store.all_turns(session.id)]
        finally:
            await store.close()

    assert _run(story) == [("dm", "complete"), ("roll", "complete")]
