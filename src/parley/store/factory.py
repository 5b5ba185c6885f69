"""Configuration -> a Store instance: the URL's scheme picks the backend."""

from __future__ import annotations

import importlib.util

from parley.config import Settings
from parley.errors import ConfigError
from parley.store.base import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def build_store(settings: Settings) -> Store:
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        from parley.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), node=settings.resolved_node_id)
    if url.startswith(POSTGRES_SCHEMES):
        if importlib.util.find_spec("asyncpg") is None:
            raise ConfigError(
                "PARLEY_DATABASE_URL names PostgreSQL, whose driver (asyncpg) is not installed: "
                "pip install 'parley[postgres]'",
                field="PARLEY_DATABASE_URL",
            )
        from parley.store.postgres import PostgresStore

        return PostgresStore(url, node=settings.resolved_node_id)
    raise ConfigError(
        f"PARLEY_DATABASE_URL scheme not supported: {url.split(':', 1)[0]!r} "
        "(supported: sqlite:///PATH, postgresql://USER@HOST:PORT/DATABASE)",
        field="PARLEY_DATABASE_URL",
    )
