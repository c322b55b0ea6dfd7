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
        self, session_id: int, tokens: int, caps: list[TokenCap], *, now: float
    ) -> Reservation | CapReached:
        counters = sorted({cap.counter for cap in caps if cap.counter})
        async with self._write() as tx:  # type: ignore[attr-defined]
            await self._lock_session(tx, session_id)  # type: ignore[attr-defined]
            await self._expire_stale(tx, now)
            used: dict[str | None, int] = {}
            for key in counters:
                await tx.execute("INSERT INTO token_counters (key) VALUES (?) ON CONFLICT (key) DO NOTHING", key)
                row = (await tx.rows(f"SELECT used, reserved FROM token_counters WHERE key = ?{self.for_update}",
                                     key))[0]
                used[key] = int(row[0]) + int(row[1])
            if any(cap.counter is None for cap in caps):
                used[None] = int(await tx.value(
                    "SELECT COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)"
                    " FROM usage WHERE session_id = ?", session_id)) + int(await tx.value(
                    "SELECT COALESCE(SUM(tokens), 0) FROM token_reservations WHERE session_id = ?", session_id))
            for cap in caps:
                if cap.limit and used[cap.counter] + tokens > cap.limit:
                    return CapReached(cap, used[cap.counter], tokens)
            reservation_id = await tx.value(
                "INSERT INTO token_reservations (session_id, tokens, counter_keys, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id", session_id, tokens, _SEP.join(counters), now)
            await self._add_to_counters(tx, counters, reserved=tokens)
        return Reservation(int(reservation_id), tokens)

    async def settle_reservation(self, reservation: Reservation, used_tokens: int) -> None:
        async with self._write() as tx:  # type: ignore[attr-defined]
            rows = await tx.rows(
                f"SELECT tokens, counter_keys FROM token_reservations WHERE id = ?{self.for_update}", reservation.id)
            if rows:  # else it was already taken as spent (stale)
                await self._release(tx, reservation.id, int(rows[0][0]), rows[0][1], used_tokens)

    async def counter_used(self, key: str) -> tuple[int, int]:
        """(charged, held) on one counter; (0, 0) for one never used."""
        rows = await self._rows("SELECT used, reserved FROM token_counters WHERE key = ?", key)  # type: ignore
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def _expire_stale(self, tx: Tx, now: float) -> None:
        stale = await tx.rows(
            "SELECT id, tokens, counter_keys FROM token_reservations WHERE created_at < ? ORDER BY id"
            f"{self.skip_locked}", now - STALE_SECONDS)
        for reservation_id, tokens, keys in stale:
            await self._release(tx, reservation_id, int(tokens), keys, int(tokens))

    async def _release(self, tx: Tx, reservation_id: int, held: int, keys: str, charged: int) -> None:
        await tx.execute("DELETE FROM token_reservations WHERE id = ?", reservation_id)
        await self._add_to_counters(tx, sorted(k for k in keys.split(_SEP) if k), reserved=-held, used=charged)

    @staticmethod
    async def _add_to_counters(tx: Tx, keys: list[str], *, reserved: int = 0, used: int = 0) -> None:
        for key in keys:
            await tx.execute("UPDATE token_counters SET reserved = reserved + ?, used = used + ? WHERE key = ?",
                             reserved, used, key)
