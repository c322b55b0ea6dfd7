"""`dungeon-master migrate-db --to postgresql://...` moves a whole SQLite database with nothing lost: every
table's count, every row, and every session's turns one by one; the copy continues with new ids after the copied
ones; a target that has data is refused with one line."""

from __future__ import annotations

import asyncio

import pytest

from bot.cli import main
from bot.llm.base import Usage
from bot.store import store_for
from bot.store.base import CallRecord, Channel, Player, RollRecord, TokenCap
from bot.store.migrations import MIGRATIONS

ARIA, BRAM = Player("u1", "Aria"), Player("u2", "Bräm 🐉")
ROLL = RollRecord(ARIA, "1d20+3", 17, "1d20 (14) + 3 = `17`", "Stealth; quietly", "Aria rolled 1d20+3: 17")
DM_ROLL = RollRecord(Player("dm", "The DM, for the goblin"), "1d6", 4, "1d6 (4) = `4`", None, "The DM rolled 4", True)


async def _fill(url: str) -> None:
    store = store_for(url)
    await store.open()
    for n in range(3):
        channel = Channel(None if n == 2 else "g1", f"c{n}")
        session = await store.start_session(channel, ARIA, f"premise {n}; with 'quotes'")
        for k in range(5):
            turn = await store.begin_turn(session.id, BRAM if k % 2 else ARIA, f"action {k}\nline two")
            if k == 3:
                await store.fail_turn(session.id, turn, [CallRecord("openai", "llama", Usage(50, 0), None)])
                continue
            await store.add_roll(channel, session.id, ROLL)
            await store.complete_turn(session.id, turn, f"answer {k} …", [
                CallRecord("anthropic", "claude-sonnet-5-5", Usage(1000 + k, 200, 30, 7), 0.0123456789)], [DM_ROLL])
        await store.begin_turn(session.id, ARIA, "cut by a stop")  # pending: interrupted when opened again
        if n == 0:
            await store.set_token_limit(session.id, 50_000)
            await store.end_session(session.id, BRAM)
    await store.add_roll(Channel("g1", "c9"), None, ROLL)  # a roll outside any adventure
    await store.set_meta("commands", "abc123")
    held = await store.reserve_tokens(2, 900, [TokenCap("player_day", 10_000, "player:u1:2026-12-01", 1.0)],
                                      now=1764547200.5)
    await store.settle_reservation(held, 321)
    await store.reserve_tokens(2, 700, [TokenCap("server_month", 0, "guild:g1:2026-12", 2.0)], now=1764547201.25)
    await store.close()


async def _dump(url: str) -> tuple[dict, dict]:
    store = store_for(url)
    await store.open()
    tables = {}
    for table in ("sessions", "turns", "usage", "rolls", "meta", "token_counters", "token_reservations"):
        rows = await store._rows(f"SELECT * FROM {table} ORDER BY 1")
        tables[table] = [tuple(r) for r in rows]
    sessions = {}
    for (session_id, *_rest) in tables["sessions"]:
        sessions[session_id] = (await store.all_turns(session_id), await store.usage_totals(session_id),
                                await store.count_turns(session_id))
    await store.close()
    return tables, sessions


def _config(tmp_path, url: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    return str(path)


def test_migrate_db_copies_everything_and_the_copy_goes_on(tmp_path, postgres_url, capsys):
    source = f"sqlite:///{tmp_path / 'dm.db'}"
    asyncio.run(_fill(source))
    assert main(["--config", _config(tmp_path, source), "migrate-db", "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    for count in ("sessions 3,", "turns 54,", "usage 15", "rolls 25,", "meta 1,", "token_counters 2,",
                  "token_reservations 1,"):
        assert count in out, out

    before, after = asyncio.run(_dump(source)), asyncio.run(_dump(postgres_url))
    for table, rows in before[0].items():
        assert len(after[0][table]) == len(rows), table
        assert after[0][table] == rows, table  # every row, every column, equal values
    assert after[1] == before[1]  # each session, turn by turn, with its usage totals
    assert any(t.status == "interrupted" for turns, _, _ in after[1].values() for t in turns)

    async def go_on() -> None:  # the copy is a working database: new ids follow the copied ones
        store = store_for(postgres_url)
        await store.open()
        assert await store.schema_version() == len(MIGRATIONS)
        session = await store.start_session(Channel("g1", "c0"), ARIA, "again")
        assert session.id == 4
        turn = await store.begin_turn(session.id, ARIA, "hello")
        assert turn == 55
        await store.close()

    asyncio.run(go_on())
    # a second copy into the same (no longer empty) database is refused, and changes nothing
    assert main(["--config", _config(tmp_path, source), "migrate-db", "--to", postgres_url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dungeon-master: the target database") and "already has data" in err


@pytest.mark.parametrize("source, target, expected", [
    ("postgresql://x/y", "postgresql://a:pw-secret@b/c", "migrate-db copies an SQLite database"),
    ("sqlite:///{tmp}/dm.db", "sqlite:///other.db", "migrate-db --to must be a postgresql:// URL"),
    ("sqlite:///{tmp}/dm.db", "postgresql://bot:pw-secret@127.0.0.1:1/dm", "cannot open the database postgresql://bot:***@"),
])
def test_migrate_db_refuses_with_one_line(tmp_path, capsys, source, target, expected):
    source = source.format(tmp=tmp_path)
    assert main(["--config", _config(tmp_path, source), "migrate-db", "--to", target]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "pw-secret" not in captured.out + captured.err
