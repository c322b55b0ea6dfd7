"""Persistence: ``store_for(url)`` picks the backend from ``[database] url`` (or ``DM_DATABASE_URL``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.store.base import StoreError, mask_url

__all__ = ["SCHEMES", "StoreError", "mask_url", "store_for"]

if TYPE_CHECKING:
    from bot.store.sql import SQLStore

SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def store_for(url: str) -> SQLStore:
    """The store behind ``url`` (not yet opened). Raises ``StoreError`` for a scheme the bot has no store for."""
    if url.startswith("sqlite:///"):
        from bot.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from bot.store.postgres import PostgresStore

        return PostgresStore(url)
    scheme = url.partition("://")[0] if "://" in url else url[:20]
    raise StoreError(f"[database] url: no store for {scheme!r} URLs; use sqlite:///path/to/file.db or "
                     "postgresql://user:password@host:5432/database")
