"""Per-client-address limits on what costs the operator: voice-call signalling and TURN credentials.

Until users exist, the client's address is the only identity there is: one address may mint
TURN credentials and send offers at PARLEY_SIGNALLING_RATE_LIMIT (a `limits` rate string such as
`30/minute`, a moving window), and hold at most PARLEY_MAX_CALLS_PER_CLIENT calls at once (the
call registry counts those). Without this one replayed SDP opened 50 calls in 8 s and locked
every user out of voice, and /api/ice minted 50 TURN credentials in under a second.
"""

from __future__ import annotations

from fastapi import Request
from limits import RateLimitItem, parse, storage, strategies

from parley.config import Settings
from parley.errors import ConfigError, RateLimited

SETTING = "PARLEY_SIGNALLING_RATE_LIMIT"


def client_address(request: Request) -> str:
    """The peer's address (behind a proxy that is the proxy's: the users issue adds identities)."""
    return request.client.host if request.client is not None else "unknown"


def count_signalling(request: Request, what: str) -> None:
    """Count one `what` (ice, offer) against the app's limits, when it has any."""
    limits: SignallingLimits | None = request.app.state.services.limits
    if limits is not None:
        limits.hit(request, what)


class SignallingLimits:
    def __init__(self, rate: str) -> None:
        try:
            self.rate: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise ConfigError(f"{SETTING}={rate!r} is not a rate such as 30/minute", field=SETTING) from exc
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> SignallingLimits:
        return cls(settings.signalling_rate_limit)

    def hit(self, request: Request, what: str) -> None:
        """Count one `what` (ice, offer) for the request's address; RateLimited once over."""
        address = client_address(request)
        if not self._limiter.hit(self.rate, what, address):
            raise RateLimited(
                f"too many {what} requests from this address (limit {self.rate}); try again shortly",
                field="client",
                limit=str(self.rate),
            )
