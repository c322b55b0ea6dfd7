from __future__ import annotations

import dataclasses

import pytest

from bot.config import Config
from bot.dm.guards import RetryPolicy
from bot.dm.service import DMService
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


@pytest.fixture
def sleep():
    return FakeSleep()


@pytest.fixture
def make_service(store, sleep):
    def make(provider, **sections) -> DMService:
        config = make_config(**sections)
        return DMService(config, store, provider, retry=RetryPolicy(config.retry, sleep=sleep))

    return make
