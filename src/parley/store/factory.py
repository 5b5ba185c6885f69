"""Configuration -> a Store instance."""

from __future__ import annotations

from parley.config import Settings
from parley.errors import ConfigError
from parley.store.base import Store


def build_store(settings: Settings) -> Store:
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        from parley.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ConfigError(
        f"PARLEY_DATABASE_URL scheme not supported: {url.split(':', 1)[0]!r} (supported: sqlite:///PATH)",
        field="PARLEY_DATABASE_URL",
    )
