"""Per-client-address limits on what costs the operator: call signalling, TURN credentials, live sessions.

Until users exist, the client's address is the only identity there is. One address may mint TURN
credentials and send call offers at PARLEY_SIGNALLING_RATE_LIMIT each, open sockets on sessions
that are not live at PARLEY_NEW_SESSIONS_RATE_LIMIT (each such socket makes a live session that
stays until it idles out), and hold at most PARLEY_MAX_CALLS_PER_CLIENT calls at once (the call
registry counts those). Rates are `limits` rate strings (`30/minute`) over a moving window, counted
in Redis with PARLEY_REDIS_URL (every process behind a balancer shares them) and in memory without.
Without this one replayed SDP opened 50 calls in 8 s and locked every user out of voice, and
/api/ice minted 50 TURN credentials in under a second.
"""

from __future__ import annotations

from collections.abc import Mapping

from limits import RateLimitItem, parse
from limits.aio import strategies
from starlette.requests import HTTPConnection

from parley.auth.rates import close_storage, rate_storage, spent
from parley.config import Settings
from parley.errors import ConfigError, RateLimited

#: what is counted -> the setting that bounds it
SETTINGS = {
    "ice": "PARLEY_SIGNALLING_RATE_LIMIT",
    "offer": "PARLEY_SIGNALLING_RATE_LIMIT",
    "new session": "PARLEY_NEW_SESSIONS_RATE_LIMIT",
}


def client_address(connection: HTTPConnection) -> str:
    """The peer's address (behind a proxy that is the proxy's: the users issue adds identities)."""
    return connection.client.host if connection.client is not None else "unknown"


async def count(connection: HTTPConnection, what: str) -> None:
    """Count one `what` against the app's limits, when it has any; RateLimited once over."""
    limits: ClientLimits | None = connection.app.state.services.limits
    if limits is not None:
        await limits.hit(client_address(connection), what)


class ClientLimits:
    def __init__(self, rates: Mapping[str, str], *, redis_url: str | None = None) -> None:
        self.rates: dict[str, RateLimitItem] = {}
        for what, rate in rates.items():
            try:
                self.rates[what] = parse(rate)
            except ValueError as exc:
                setting = SETTINGS.get(what, what)
                raise ConfigError(
                    f"{setting}={rate!r} is not a rate such as 30/minute", field=setting
                ) from exc
        self._storage = rate_storage(redis_url)
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        signalling = settings.signalling_rate_limit
        return cls(
            {"ice": signalling, "offer": signalling, "new session": settings.new_sessions_rate_limit},
            redis_url=settings.redis_url,
        )

    async def hit(self, address: str, what: str) -> None:
        """Count one `what` from `address`; RateLimited once over its rate."""
        rate = self.rates[what]
        wait = await spent(self._limiter, rate, "client", what, address)
        if wait is not None:
            raise RateLimited(
                f"too many {what} requests from this address (limit {rate}); try again in {wait} s",
                field="client",
                limit=str(rate),
                retry_after=wait,
            )

    async def aclose(self) -> None:
        await close_storage(self._storage)
