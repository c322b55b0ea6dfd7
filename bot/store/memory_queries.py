"""SQL for the campaign memory (issue 14; bot/dm/memory): the running summary with its progress marker, and
the pinned facts. A mixin of ``SQLStore`` (both backends), kept apart so the turn path stays readable; it uses
the store's reads (``_rows``), write transactions (``_transaction``) and usage ledger (``_insert_calls``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bot.store.base import CallRecord, Pin, Player, Story, SummaryState, Turn

if TYPE_CHECKING:
    from bot.store.sql import Tx

_TURN_COLUMNS = "id, session_id, seq, role, author_id, author_name, content, status, created_at"
_TURNS_AFTER = (f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ? AND status = 'complete' AND seq > ?"
                " ORDER BY seq")
_SUMMARY = "SELECT session_id, text, folded_seq, updated_at FROM memory_summaries WHERE session_id = ?"
_PINS = ("SELECT id, session_id, number, author_id, author_name, text, created_at FROM memory_pins"
         " WHERE session_id = ? AND removed_at IS NULL ORDER BY number")


def _turn(row) -> Turn:
    author = Player(row[4], row[5]) if row[4] is not None else None
    return Turn(row[0], row[1], row[2], row[3], author, row[6], row[7], row[8])


def _pin(row) -> Pin:
    return Pin(row[0], row[1], row[2], Player(row[3], row[4]), row[5], row[6])


async def read_story(tx: Tx, session_id: int) -> Story:
    """The summary, the complete turns after it and the pins, inside a read (``story_context``, ``turn_context``)."""
    rows = await tx.rows(_SUMMARY, session_id)
    state = SummaryState(*rows[0]) if rows else None
    turns = await tx.rows(_TURNS_AFTER, session_id, state.folded_seq if state else 0)
    return state, [_turn(row) for row in turns], [_pin(row) for row in await tx.rows(_PINS, session_id)]


class MemoryQueries:
    """Needs ``_rows``, ``_read``, ``_transaction``, ``_execute`` and ``_insert_calls`` from ``SQLStore``."""

    async def count_story_turns(self, session_id: int) -> int:
        rows = await self._rows(
            "SELECT COUNT(*) FROM turns WHERE session_id = ? AND status = 'complete' AND role <> 'roll'", session_id)
        return int(rows[0][0])

    async def story_turn_seq(self, session_id: int, index: int) -> int | None:
        rows = await self._rows(
            "SELECT seq FROM turns WHERE session_id = ? AND status = 'complete' AND role <> 'roll'"
            " ORDER BY seq LIMIT 1 OFFSET ?", session_id, index)
        return rows[0][0] if rows else None

    async def turns_after(self, session_id: int, seq: int, limit: int | None = None) -> list[Turn]:
        rows = await (self._rows(_TURNS_AFTER, session_id, seq) if limit is None
                      else self._rows(_TURNS_AFTER + " LIMIT ?", session_id, seq, limit))
        return [_turn(row) for row in rows]

    async def story_context(self, session_id: int) -> Story:
        """The summary, the complete turns after it and the pins, read together: one snapshot, and on SQLite one
        round trip instead of three."""
        return await self._read(lambda tx: read_story(tx, session_id))

    async def last_turns(self, session_id: int, count: int) -> list[Turn]:
        rows = await self._rows(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ? AND status = 'complete'"
            " ORDER BY seq DESC LIMIT ?", session_id, count)
        return [_turn(row) for row in reversed(rows)]

    async def summary(self, session_id: int) -> SummaryState | None:
        rows = await self._rows(_SUMMARY, session_id)
        return SummaryState(*rows[0]) if rows else None

    async def save_summary(self, session_id: int, text: str, folded_seq: int, calls: list[CallRecord]) -> None:
        async def write(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO memory_summaries (session_id, text, folded_seq, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET text = excluded.text, folded_seq = excluded.folded_seq,"
                " updated_at = excluded.updated_at",
                session_id, text, folded_seq, time.time())
            await self._insert_calls(tx, session_id, None, calls)
        await self._transaction(write)

    async def charge_calls(self, session_id: int, calls: list[CallRecord]) -> None:
        if calls:
            await self._transaction(lambda tx: self._insert_calls(tx, session_id, None, calls))

    async def pins(self, session_id: int) -> list[Pin]:
        return [_pin(row) for row in await self._rows(_PINS, session_id)]

    async def add_pin(self, session_id: int, author: Player, text: str, limit: int) -> Pin | None:
        now = time.time()

        async def write(tx: Tx) -> Pin | None:  # count and insert in one transaction: two /remember never pass 25
            await self._lock_session(tx, session_id)
            active = await tx.value(
                "SELECT COUNT(*) FROM memory_pins WHERE session_id = ? AND removed_at IS NULL", session_id)
            if int(active) >= limit:
                return None
            number = await tx.value(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM memory_pins WHERE session_id = ?", session_id)
            pin_id = await tx.value(
                "INSERT INTO memory_pins (session_id, number, author_id, author_name, text, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id", session_id, number, author.id, author.name, text, now)
            return Pin(pin_id, session_id, int(number), author, text, now)
        return await self._transaction(write)

    async def remove_pin(self, session_id: int, number: int) -> None:
        await self._execute(
            "UPDATE memory_pins SET removed_at = ? WHERE session_id = ? AND number = ? AND removed_at IS NULL",
            time.time(), session_id, number)
