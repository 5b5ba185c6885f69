"""Parley's one exception tree.

    ParleyError                      500 internal_error
    ├── InvalidInput                 400 invalid_input     (a named field broke a named limit)
    │   ├── PayloadTooLarge          413 payload_too_large
    │   ├── UnsupportedMediaType     415 unsupported_media_type
    │   ├── HeadersTooLarge          431 headers_too_large (request headers too long or too many)
    │   └── HeadersTimeout           408 request_timeout   (request headers not sent in time)
    ├── Unauthenticated              401 unauthenticated   (no credentials, or ones that do not hold)
    ├── Forbidden                    403 forbidden
    ├── NotFound                     404 not_found
    ├── ConfigError                  500 config_error      (a setting is wrong; names it)
    ├── Busy                         429 busy              (a session's turn queue is full)
    │   ├── RateLimited              429 rate_limited      (a user or client address asked too often)
    │   └── QuotaExceeded            429 quota_exceeded    (a user's daily allowance is spent)
    ├── TurnCancelled                499 cancelled         (a client stopped the turn)
    ├── BusUnavailable               503 bus_unavailable   (the shared event bus, Redis, does not answer)
    └── ProviderError                502 provider_error    (a model call failed)
        ├── ProviderNotConfigured    503 not_configured    (says which variable to set)
        ├── ProviderRateLimited      429 rate_limited
        ├── ProviderTimeout          504 timeout
        └── ProviderUnavailable      503 unavailable

Third-party errors are translated where they enter (`raise ProviderTimeout(...) from exc`);
`web/errors.py` is the one place that turns these into HTTP JSON and WebSocket events, always
with the shape of `ErrorBody`.
"""

from __future__ import annotations

from typing import Any

from parley.redact import without_paths


class ParleyError(Exception):
    status: int = 500
    code: str = "internal_error"
    #: whether the same call may succeed if tried again later
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        limit: int | float | str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.limit = limit
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        # what clients are told: a server path in the message (a model's folder) is not theirs
        body: dict[str, Any] = {
            "error": without_paths(self.message),
            "code": self.code,
            "status": self.status,
        }
        if self.field is not None:
            body["field"] = self.field
        if self.limit is not None:
            body["limit"] = self.limit
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(ParleyError):
    status = 400
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidInput):
    status = 415
    code = "unsupported_media_type"


class HeadersTooLarge(InvalidInput):
    status = 431
    code = "headers_too_large"


class HeadersTimeout(InvalidInput):
    status = 408
    code = "request_timeout"


class Unauthenticated(ParleyError):
    """No credentials, or credentials that do not hold (wrong, revoked, expired, forged)."""

    status = 401
    code = "unauthenticated"


class Forbidden(ParleyError):
    status = 403
    code = "forbidden"


class ConfigError(ParleyError):
    """A setting is wrong; raised at start-up, names the variable in `field`."""

    code = "config_error"


class NotFound(ParleyError):
    status = 404
    code = "not_found"


class Busy(ParleyError):
    status = 429
    code = "busy"
    retryable = True


class RateLimited(Busy):
    """A user (or, before authentication, a client address) asked too often.

    `retry_after` is whole seconds until the window lets the next one through (`Retry-After`).
    """

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A user's allowance for the day (model tokens, call minutes) is spent."""

    code = "quota_exceeded"


class TurnCancelled(ParleyError):
    # 499 is nginx's "client closed request": the turn was stopped on purpose.
    status = 499
    code = "cancelled"


class Fenced(ParleyError):
    """A write of a session by a node that no longer owns it: another node took the session over
    (its lease's fencing token is newer), so this node's write is refused and nothing changes."""

    status = 409
    code = "fenced"
    retryable = True


class BusUnavailable(ParleyError):
    """The distributed bus (Redis) did not take an event; raised by publish."""

    status = 503
    code = "bus_unavailable"
    retryable = True


class ProviderError(ParleyError):
    status = 502
    code = "provider_error"


class ProviderNotConfigured(ProviderError):
    status = 503
    code = "not_configured"


class ProviderRateLimited(ProviderError):
    status = 429
    code = "rate_limited"
    retryable = True


class ProviderTimeout(ProviderError):
    status = 504
    code = "timeout"
    retryable = True


class ProviderUnavailable(ProviderError):
    status = 503
    code = "unavailable"
    retryable = True
