"""settings -> the Bus: RedisBus across processes when PARLEY_REDIS_URL is set, else LocalBus."""

from __future__ import annotations

from parley.bus.base import Bus
from parley.bus.memory import LocalBus
from parley.config import Settings
from parley.errors import BusUnavailable, ConfigError
from parley.redact import safe_url


async def build_bus(settings: Settings) -> Bus:
    """The bus, checked: a Redis that does not answer at start is a ConfigError naming the setting."""
    url = settings.redis_url
    if not url:
        return LocalBus()
    from parley.bus.redis import RedisBus

    bus = RedisBus.from_url(url)
    try:
        await bus.ping()
    except BusUnavailable as exc:
        await bus.aclose()
        raise ConfigError(
            f"PARLEY_REDIS_URL: Redis at {safe_url(url)} does not answer ({exc.message}); start it, "
            "or unset PARLEY_REDIS_URL to run one process with the in-process bus",
            field="PARLEY_REDIS_URL",
        ) from exc
    return bus
