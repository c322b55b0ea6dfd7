from __future__ import annotations

import dataclasses

import pytest

from bot.config import Config
from bot.dm.guards import RetryPolicy
from bot.dm.service import DMService
from bot.store import store_for
from bot.store.sql import SQLStore
from bot.store.sqlite import SQLiteStore
from tests.fakes import FakeSleep


def make_config(**sections: dict) -> Config:
    """Defaults with some keys changed: make_config(limits={"requests_per_minute": 2})."""
    config = Config()
    changes = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, **changes)


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "dm.db"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The store tests' database, once per backend: a file, or an empty schema of the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'dm.db'}"  # the folder does not exist yet: open creates it
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def opened(database_url):
    """Open a new store on the test's database (call it again for a second process, or after a restart)."""
    stores: list[SQLStore] = []

    async def open_store() -> SQLStore:
        store = store_for(database_url)
        await store.open()
        stores.append(store)
        return store

    yield open_store
    for store in stores:  # a test that fails half-way leaves none open (close twice is harmless)
        await store.close()


@pytest.fixture
def sleep():
    return FakeSleep()


@pytest.fixture
def make_service(store, sleep):
    def make(provider, **sections) -> DMService:
        config = make_config(**sections)
        return DMService(config, store, provider, retry=RetryPolicy(config.retry, sleep=sleep))

    return make
