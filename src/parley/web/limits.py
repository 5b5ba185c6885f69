"""Per-client-address limits on what costs the operator: call signalling, TURN credentials, live sessions.

Until users exist, the client's address is the only identity there is. One address may mint TURN
credentials and send call offers at PARLEY_SIGNALLING_RATE_LIMIT each, open sockets on sessions
that are not live at PARLEY_NEW_SESSIONS_RATE_LIMIT (each such socket makes a live session that
stays until it idles out), and hold at most PARLEY_MAX_CALLS_PER_CLIENT calls at once (the call
registry counts those). Rates are `limits` rate strings (`30/minute`) over a moving window.
Without this one replayed SDP opened 50 calls in 8 s and locked every user out of voice, and
/api/ice minted 50 TURN credentials in under a second.
"""

from __future__ import annotations

from collections.abc import Mapping

from limits import RateLimitItem, parse, storage, strategies
from starlette.requests import HTTPConnection

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


def count(connection: HTTPConnection, what: str) -> None:
    """Count one `what` against the app's limits, when it has any; RateLimited once over."""
    limits: ClientLimits | None = connection.app.state.services.limits
    if limits is not None:
        limits.hit(connection, what)


class ClientLimits:
    def __init__(self, rates: Mapping[str, str]) -> None:
        self.rates: dict[str, RateLimitItem] = {}
        for what, rate in rates.items():
            try:
                self.rates[what] = parse(rate)
            except ValueError as exc:
                setting = SETTINGS.get(what, what)
                raise ConfigError(
                    f"{setting}={rate!r} is not a rate such as 30/minute", field=setting
                ) from exc
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        signalling = settings.signalling_rate_limit
        return cls({"ice": signalling, "offer": signalling, "new session": settings.new_sessions_rate_limit})

    def hit(self, connection: HTTPConnection, what: str) -> None:
        rate = self.rates[what]
        if not self._limiter.hit(rate, what, client_address(connection)):
            raise RateLimited(
                f"too many {what} requests from this address (limit {rate}); try again shortly",
                field="client",
                limit=str(rate),
            )
