"""Token reservations: budgets that hold across processes (mixed into ``bot.store.sql.SQLStore``).

Before an LLM call the service holds the call's estimate (input estimate + max_output_tokens) against every cap
that applies: the adventure's budget (charged = its usage ledger), a player's UTC day and a server's UTC month
(charged = a row of token_counters each). The check and the hold are one transaction that locks what it reads
(SELECT ... FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE on SQLite), so two processes can only both pass when both
estimates fit: together they overspend by at most what a call used beyond its estimate. After the call,
``settle_reservation`` drops the hold and charges the counters with the reported usage (the usage ledger was
charged by complete_turn / fail_turn).

Holds of a process that died mid-call are taken as fully spent once older than ``STALE_SECONDS`` (no call lasts
that long), so they neither stay held forever nor come back as free tokens.

Lock order, the same everywhere so writers never deadlock: the session row, then reservations, then counters
sorted by key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.store.base import CapReached, Reservation, TokenCap

if TYPE_CHECKING:
    from bot.store.sql import Tx

STALE_SECONDS = 1800.0
_SEP = "\n"


class TokenLedger:
    for_update: str
    skip_locked: str = ""

    async def reserve_tokens(
        self, session_id: int, tokens: int, caps: list[TokenCap], *, now: float, adding_to: Reservation | None = None
    ) -> Reservation | CapReached:
        """Hold ``tokens`` more against ``caps``; ``adding_to``: grow that hold (a turn's next tool round)
        instead of making a new one. Returns the (grown) hold, or the first cap that has no room."""
        counters = sorted({cap.counter for cap in caps if cap.counter})

        async def write(tx: Tx) -> Reservation | CapReached:
            await self._lock_session(tx, session_id)  # type: ignore[attr-defined]
            await self._expire_stale(tx, now)
            growing = adding_to
            if growing is not None and not await tx.rows(
                    f"SELECT id FROM token_reservations WHERE id = ?{self.for_update}", growing.id):
                growing = None  # it went stale meanwhile (and was charged): hold anew
            used: dict[str | None, int] = {}
            for key in counters:
                # one statement creates the counter if new and, on PostgreSQL, locks its row (DO UPDATE does)
                row = (await tx.rows(
                    "INSERT INTO token_counters (key) VALUES (?) ON CONFLICT (key) DO UPDATE SET key = excluded.key"
                    " RETURNING used, reserved", key))[0]
                used[key] = int(row[0]) + int(row[1])
            if any(cap.counter is None for cap in caps):
                used[None] = int(await tx.value(
                    "SELECT (SELECT COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens"
                    " + cache_write_tokens), 0) FROM usage WHERE session_id = ?)"
                    " + (SELECT COALESCE(SUM(tokens), 0) FROM token_reservations WHERE session_id = ?)",
                    session_id, session_id))
            for cap in caps:
                if cap.limit and used[cap.counter] + tokens > cap.limit:
                    return CapReached(cap, used[cap.counter], tokens)
            if growing is not None:
                await tx.execute("UPDATE token_reservations SET tokens = tokens + ? WHERE id = ?", tokens, growing.id)
                await self._add_to_counters(tx, counters, reserved=tokens)
                return Reservation(growing.id, growing.tokens + tokens)
            reservation_id = await tx.value(
                "INSERT INTO token_reservations (session_id, tokens, counter_keys, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id", session_id, tokens, _SEP.join(counters), now)
            await self._add_to_counters(tx, counters, reserved=tokens)
            return Reservation(int(reservation_id), tokens)

        return await self._transaction(write)  # type: ignore[attr-defined]

    async def settle_reservation(self, reservation: Reservation, used_tokens: int) -> None:
        async def write(tx: Tx) -> None:
            rows = await tx.rows("DELETE FROM token_reservations WHERE id = ? RETURNING tokens, counter_keys",
                                 reservation.id)
            if rows:  # else it was already taken as spent (stale)
                await self._add_to_counters(tx, _keys(rows[0][1]), reserved=-int(rows[0][0]), used=used_tokens)
        await self._transaction(write)  # type: ignore[attr-defined]

    async def counter_used(self, key: str) -> tuple[int, int]:
        """(charged, held) on one counter; (0, 0) for one never used."""
        rows = await self._rows("SELECT used, reserved FROM token_counters WHERE key = ?", key)  # type: ignore
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def _expire_stale(self, tx: Tx, now: float) -> None:
        """Holds older than STALE_SECONDS are charged in full (looked for at most once a minute per process)."""
        if now < getattr(self, "_next_stale_check", 0.0):
            return
        self._next_stale_check = now + 60.0
        stale = await tx.rows(
            "SELECT id, tokens, counter_keys FROM token_reservations WHERE created_at < ? ORDER BY id"
            f"{self.skip_locked}", now - STALE_SECONDS)
        for reservation_id, tokens, keys in stale:
            await tx.execute("DELETE FROM token_reservations WHERE id = ?", reservation_id)
            await self._add_to_counters(tx, _keys(keys), reserved=-int(tokens), used=int(tokens))

    @staticmethod
    async def _add_to_counters(tx: Tx, keys: list[str], *, reserved: int = 0, used: int = 0) -> None:
        # One key at a time, in sorted order: one UPDATE ... WHERE key IN (...) locks rows in scan order, which
        # deadlocked against a reservation locking them sorted (bench/store_turns.py found it).
        for key in sorted(keys):
            await tx.execute("UPDATE token_counters SET reserved = reserved + ?, used = used + ? WHERE key = ?",
                             reserved, used, key)


def _keys(joined: str) -> list[str]:
    return sorted(k for k in joined.split(_SEP) if k)
