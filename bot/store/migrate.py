"""``dungeon-master migrate-db --to postgresql://...``: copy a whole SQLite database into PostgreSQL.

Both stores are opened first, so both stand at the newest schema (the same tables and columns). Then every
table of the SQLite file is copied, parents before children (the order is read from its foreign keys, so a table
a later feature adds is copied without a change here), rows with their own ids, in ONE PostgreSQL transaction:
the target has all of it or nothing. Identity sequences are moved past the copied ids, and every table's row
count is compared before the transaction commits. The target must be empty: nothing is merged or overwritten.

Stop the bot first: turns written to the SQLite file during the copy would not be in the target.
"""

from __future__ import annotations

from bot.store.base import StoreError
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SQLiteStore

BATCH = 5000


async def _tables(source: SQLiteStore) -> list[str]:
    """The file's tables, each after the tables it references."""
    names = [r[0] for r in await source._rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    parents = {name: {r[2] for r in await source._rows(f"PRAGMA foreign_key_list({name})")} - {name}
               for name in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:
            left = sorted(set(names) - set(ordered))
            raise StoreError(f"cannot order the tables {left}: their foreign keys form a cycle")
        ordered += ready
    return ordered


async def migrate(source_url: str, target_url: str) -> str:
    """Open both, copy, close both; the report line for the operator. Raises ``StoreError``."""
    from bot.store import store_for

    source, target = store_for(source_url), store_for(target_url)
    if not isinstance(source, SQLiteStore):
        raise StoreError(f"migrate-db copies an SQLite database; [database] url is {source.describe()}")
    if not isinstance(target, PostgresStore):
        raise StoreError(f"migrate-db --to must be a postgresql:// URL, not {target.describe()}")
    await source.open()
    try:
        await target.open()
        try:
            counts = await copy_sqlite_to_postgres(source, target)
        finally:
            await target.close()
    finally:
        await source.close()
    rows = ", ".join(f"{table} {count:,}" for table, count in counts.items())
    return (f"Copied {source.describe()} to {target.describe()}: {rows} rows; every count matches. Point "
            "[database] url (or DM_DATABASE_URL) at the new database and start the bot.")


async def copy_sqlite_to_postgres(source: SQLiteStore, target: PostgresStore) -> dict[str, int]:
    """Copy every row; returns the rows per table (equal on both sides, or StoreError and nothing copied)."""
    tables = await _tables(source)
    for table in tables:
        if await target.count_rows(table):
            raise StoreError(f"the target database {target.describe()} already has data ({table}): migrate-db "
                             "copies into an empty database only")
    counts: dict[str, int] = {}
    async with target._write() as tx:
        conn = tx.conn
        for table in tables:
            info = await source._rows(f"PRAGMA table_info({table})")
            columns = [r[1] for r in info]
            cursor = await source.db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
            copied = 0
            while rows := await cursor.fetchmany(BATCH):
                await conn.copy_records_to_table(table, records=[tuple(r) for r in rows], columns=columns)
                copied += len(rows)
            await cursor.close()
            if any(r[1] == "id" and r[5] for r in info):  # an identity primary key: continue after the copied ids
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"COALESCE(MAX(id), 0) + 1, false) FROM {table}")
            in_target = await conn.fetchval(f"SELECT COUNT(*) FROM {table}")
            if in_target != copied or copied != await source.count_rows(table):
                raise StoreError(f"{table}: {copied} rows read but {in_target} in the target; nothing was copied")
            counts[table] = copied
    return counts
