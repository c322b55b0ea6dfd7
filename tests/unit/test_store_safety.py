"""A safe store (issue 9, item 12), on both backends: a database from a newer bot is refused with one line, a
migration is applied whole or not at all, and statements are never cut at a ";"."""

from __future__ import annotations

import pytest

from bot.store import StoreError, store_for
from bot.store import migrations
from bot.store.base import Channel, Player

HALL = Channel("g1", "hall")
ARIA = Player("u1", "Aria")


async def _set_version(store, version: int) -> None:
    await store._transaction(lambda tx: store._write_version(tx, version))


async def test_a_database_from_a_newer_bot_is_refused_with_one_line(opened, database_url):
    store = await opened()
    newest = len(migrations.MIGRATIONS)
    await _set_version(store, newest + 1)
    await store.close()
    with pytest.raises(StoreError) as refused:
        await opened()
    message = str(refused.value)
    assert "written by a newer version of the bot" in message and f"schema version {newest + 1}" in message
    assert "\n" not in message
    with pytest.raises(StoreError, match="newer version"):  # `dungeon-master check` says the same, changing nothing
        await store_for(database_url).inspect()


async def test_a_migration_is_applied_whole_or_not_at_all(opened, monkeypatch):
    store = await opened()
    await store.start_session(HALL, ARIA, "kept")
    await store.close()
    newest = len(migrations.MIGRATIONS)
    broken = ("CREATE TABLE half_done (id INTEGER PRIMARY KEY)",
              "INSERT INTO meta (key, value) VALUES ('half', 'done')",
              "ALTER TABLE no_such_table ADD COLUMN x INTEGER")  # fails after two statements succeeded
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    with pytest.raises(StoreError):
        await opened()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:newest])
    store = await opened()
    assert await store.schema_version() == newest
    assert await store.get_meta("half") is None
    with pytest.raises(Exception):
        await store.count_rows("half_done")
    assert (await store.active_session("hall")).premise == "kept"


async def test_a_semicolon_inside_a_statement_is_not_a_statement_boundary(opened, monkeypatch):
    extra = ("CREATE TABLE notes (id INTEGER PRIMARY KEY, sep TEXT NOT NULL DEFAULT ';', body TEXT)",
             "INSERT INTO notes (body) VALUES ('one; two')")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, extra])
    store = await opened()
    assert await store.schema_version() == len(migrations.MIGRATIONS)
    assert [tuple(r) for r in await store._rows("SELECT sep, body FROM notes")] == [(";", "one; two")]


async def test_a_file_that_is_not_a_database_gives_one_line(tmp_path):
    path = tmp_path / "dm.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes\n" * 100)
    for attempt in (store_for(f"sqlite:///{path}").open, store_for(f"sqlite:///{path}").inspect):
        with pytest.raises(StoreError) as refused:
            await attempt()
        assert str(refused.value) == f"cannot open the database {path}: file is not a database"


async def test_an_unreachable_postgresql_gives_one_line_without_the_password():
    url = "postgresql://bot:s3cret-pw@127.0.0.1:1/dm"  # port 1: nothing listens
    for attempt in (store_for(url).open, store_for(url).inspect):
        with pytest.raises(StoreError) as refused:
            await attempt()
        message = str(refused.value)
        assert message.startswith("cannot open the database postgresql://bot:***@127.0.0.1:1/dm: ")
        assert "s3cret" not in message and "\n" not in message


def test_an_unknown_scheme_is_one_clear_line():
    with pytest.raises(StoreError, match="no store for 'mysql' URLs; use sqlite:///"):
        store_for("mysql://x/y")


async def test_a_database_of_an_older_version_is_migrated_keeping_its_data(opened, monkeypatch):
    full = migrations.MIGRATIONS
    monkeypatch.setattr(migrations, "MIGRATIONS", full[:2])  # what round 1 wrote
    store = await opened()
    session = await store.start_session(HALL, ARIA, "old")
    await store.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", full)
    store = await opened()
    assert await store.schema_version() == len(full)
    assert (await store.active_session("hall")).id == session.id
    assert (await store.usage_totals(session.id)).estimated_tokens == 0  # the new column, with its default
    assert await store.count_rows("token_counters") == 0  # the new tables
