"""The party's state (the rules engine, issue 15), mixed into ``bot.store.sql.SQLStore`` for both backends.

One JSON document per adventure (characters and the combat, written by ``bot.dm.rules``) and every change the
engine made, each line kept with the turn it was made in. The document is read, changed and written in one
transaction with the session's row locked, so two writers (a tool call and a /character, or two processes) never
lose each other's change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bot.store.sql import Tx

T = TypeVar("T")
PARTY_STATE = "SELECT data FROM party_state WHERE session_id = ?"


class PartyStates:
    async def party_state(self, session_id: int) -> str | None:
        rows = await self._rows(PARTY_STATE, session_id)  # type: ignore[attr-defined]
        return rows[0][0] if rows else None

    async def change_party_state(
        self, session_id: int, turn_id: int | None, apply: Callable[[str | None], tuple[str, list[str], T]]
    ) -> T:
        """Read, change and write the party's document in one transaction, with the lines of the change.
        ``apply`` (pure, quick) gets the stored document and returns the new one, the lines to keep with the
        turn, and a value handed back; if it raises, nothing is written."""
        async def write(tx: Tx) -> T:
            await self._lock_session(tx, session_id)  # type: ignore[attr-defined]
            rows = await tx.rows("SELECT data FROM party_state WHERE session_id = ?", session_id)
            data, lines, value = apply(rows[0][0] if rows else None)
            now = time.time()
            await tx.execute(
                "INSERT INTO party_state (session_id, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                session_id, data, now)
            if lines:
                await tx.executemany(
                    "INSERT INTO state_changes (session_id, turn_id, line, created_at) VALUES (?, ?, ?, ?)",
                    [(session_id, turn_id, line, now) for line in lines])
            return value
        return await self._transaction(write)  # type: ignore[attr-defined]

    async def state_changes(self, session_id: int) -> list[tuple[int | None, str]]:
        """Every change the engine made in the session, oldest first: (the turn it was made in, its line)."""
        rows = await self._rows(  # type: ignore[attr-defined]
            "SELECT turn_id, line FROM state_changes WHERE session_id = ? ORDER BY id", session_id)
        return [(row[0], row[1]) for row in rows]
