"""Errors of the Cloudflare Realtime SFU client, as branches of Parley's one exception tree.

    ProviderError (parley.errors)
    └── RealtimeError                 502 realtime_error        (any other failure; `error_code`, `http_status`)
        ├── RealtimeNotConfigured     503 not_configured        (401/403: names the variable to set)
        ├── RealtimeInvalidRequest    400 invalid_request       (decoding_error, invalid_params, SDP rejected)
        │   └── RealtimePayloadTooLarge 413 payload_too_large
        ├── SessionNotFound           404 session_not_found
        ├── SessionGone               410 session_gone          (make a new session, rebuild its tracks)
        ├── SessionNotConnected       425 session_not_connected (still not connected after waiting)
        ├── TrackError                502 track_error           (HTTP 200, but some tracks failed)
        ├── DataChannelError          502 data_channel_error    (HTTP 200, but some channels failed)
        └── RealtimeUnavailable       503 unavailable           (retryable failures, retries used up)
            └── RealtimeTimeout       504 timeout

`check_tracks` / `check_datachannels` turn the per-item errors of an HTTP 200 into `TrackError` /
`DataChannelError`. `RealtimeNotConfigured`, `RealtimeUnavailable` and `RealtimeTimeout` also derive
from the matching `Provider*` class, so code that already handles a model provider's outage handles
the SFU's too.
Every message is built from status, error code and the API's description (truncated); never from
the app secret or an SDP the caller sent.
"""

from __future__ import annotations

from typing import Any

from parley.errors import ProviderError, ProviderNotConfigured, ProviderTimeout, ProviderUnavailable
from parley.rtc.cloudflare.models import DataChannel, DataChannelsReply, Track, TracksReply

APP_ID_VAR = "CLOUDFLARE_REALTIME_APP_ID"
APP_SECRET_VAR = "CLOUDFLARE_REALTIME_APP_SECRET"
#: how much of an upstream description (or a non-JSON body) goes into a message
DESCRIPTION_LIMIT = 300


class RealtimeError(ProviderError):
    code = "realtime_error"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        field: str | None = None,
        limit: int | float | str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, field=field, limit=limit, details=details)
        #: the API's `errorCode`, when it sent one
        self.error_code = error_code
        #: the API's HTTP status, when it answered at all
        self.http_status = http_status


class RealtimeNotConfigured(RealtimeError, ProviderNotConfigured):
    status = 503
    code = "not_configured"


class RealtimeInvalidRequest(RealtimeError):
    status = 400
    code = "invalid_request"


class RealtimePayloadTooLarge(RealtimeInvalidRequest):
    status = 413
    code = "payload_too_large"


class SessionNotFound(RealtimeError):
    status = 404
    code = "session_not_found"


class SessionGone(RealtimeError):
    """The SFU closed the session: make a new session and rebuild its tracks. Never retried."""

    status = 410
    code = "session_gone"


class SessionNotConnected(RealtimeError):
    """The session's peer connection was still not connected after the client's own waiting."""

    status = 425
    code = "session_not_connected"
    retryable = True


class TrackError(RealtimeError):
    """HTTP 200, but some items of `tracks` carry an `errorCode`; `reply` still holds every item."""

    code = "track_error"

    def __init__(self, message: str, *, reply: TracksReply, failed: list[Track], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reply = reply
        self.failed = failed


class DataChannelError(RealtimeError):
    """HTTP 200, but some items of `dataChannels` carry an `errorCode`."""

    code = "data_channel_error"

    def __init__(
        self, message: str, *, reply: DataChannelsReply, failed: list[DataChannel], **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.reply = reply
        self.failed = failed


class RealtimeUnavailable(RealtimeError, ProviderUnavailable):
    status = 503
    code = "unavailable"
    retryable = True


class RealtimeTimeout(RealtimeUnavailable, ProviderTimeout):
    """No answer in time. After a mutation the SFU may or may not have applied it."""

    status = 504
    code = "timeout"


def check_tracks(reply: TracksReply, what: str) -> TracksReply:
    """The reply, or `TrackError` if any item of its `tracks` carries an `errorCode`."""
    failed = [track for track in reply.tracks if track.errorCode]
    if failed:
        listed = "; ".join(
            f"{_track_label(t)}: {t.errorCode}"
            + (f" ({clip(t.errorDescription)})" if t.errorDescription else "")
            for t in failed
        )
        raise TrackError(
            f"Cloudflare Realtime failed {len(failed)} of {len(reply.tracks)} tracks in {what}: {listed}",
            reply=reply,
            failed=failed,
            error_code=failed[0].errorCode,
            http_status=200,
        )
    return reply


def _track_label(track: Track) -> str:
    parts = [f"track {track.trackName!r}" if track.trackName else "track"]
    if track.mid is not None:
        parts.append(f"mid {track.mid}")
    return " ".join(parts)


def check_datachannels(reply: DataChannelsReply, what: str) -> DataChannelsReply:
    """The reply, or `DataChannelError` if any item of its `dataChannels` carries an `errorCode`."""
    failed = [channel for channel in reply.dataChannels if channel.errorCode]
    if failed:
        listed = "; ".join(
            f"channel {c.dataChannelName or c.id!r}: {c.errorCode}"
            + (f" ({clip(c.errorDescription)})" if c.errorDescription else "")
            for c in failed
        )
        raise DataChannelError(
            f"Cloudflare Realtime failed {len(failed)} of {len(reply.dataChannels)} data channels in "
            f"{what}: {listed}",
            reply=reply,
            failed=failed,
            error_code=failed[0].errorCode,
            http_status=200,
        )
    return reply


def clip(text: str) -> str:
    """Upstream text on one line and at most DESCRIPTION_LIMIT characters: enough to diagnose."""
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_LIMIT else text[:DESCRIPTION_LIMIT] + "…"
