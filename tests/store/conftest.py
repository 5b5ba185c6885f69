"""The store fixtures: every contract test runs once per backend, each on its own fresh database.

A PostgreSQL test gets a database of its own (made from the `postgres` database, dropped after),
so tests are isolated and may run in parallel.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from parley.store.factory import build_store
from parley.store.postgres import PostgresStore
from parley.store.sqlite import SQLiteStore
from tests.conftest import make_settings, require_package, require_service

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"

#: what both backends are: a Store and a UserStore
AnyStore = SQLiteStore | PostgresStore


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    require_package("asyncpg", "the PostgreSQL store")
    require_service(PG_HOST, PG_PORT, "PostgreSQL, for the PostgreSQL store")
    name = "parley_test_" + secrets.token_hex(6)
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await _admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'parley.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


StoreFactory = Callable[[], AnyStore]


@pytest.fixture
async def new_store(store_url: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Make (unopened) stores on the test's database, as the app's factory does; closed after."""
    made: list[AnyStore] = []

    def make() -> AnyStore:
        store = build_store(make_settings(tmp_path / "data", database_url=store_url))
        assert isinstance(store, SQLiteStore | PostgresStore)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def store(new_store: StoreFactory) -> AnyStore:
    s = new_store()
    await s.open()
    return s
