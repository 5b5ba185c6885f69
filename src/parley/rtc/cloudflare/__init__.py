"""Cloudflare Realtime SFU: an async client for its HTTP API, its wire models and its errors."""

from parley.rtc.cloudflare.client import (
    DEFAULT_BASE_URL,
    MAX_TRACKS_PER_CALL,
    RETRYABLE_CODES,
    CloudflareRealtimeClient,
)
from parley.rtc.cloudflare.errors import (
    APP_ID_VAR,
    APP_SECRET_VAR,
    DataChannelError,
    RealtimeError,
    RealtimeInvalidRequest,
    RealtimeNotConfigured,
    RealtimePayloadTooLarge,
    RealtimeTimeout,
    RealtimeUnavailable,
    SessionGone,
    SessionNotConnected,
    SessionNotFound,
    TrackError,
)
from parley.rtc.cloudflare.models import (
    DataChannel,
    DataChannelsReply,
    NewSessionReply,
    SessionDescription,
    SessionState,
    Track,
    TracksReply,
)

__all__ = [
    "APP_ID_VAR",
    "APP_SECRET_VAR",
    "DEFAULT_BASE_URL",
    "MAX_TRACKS_PER_CALL",
    "RETRYABLE_CODES",
    "CloudflareRealtimeClient",
    "DataChannel",
    "DataChannelError",
    "DataChannelsReply",
    "NewSessionReply",
    "RealtimeError",
    "RealtimeInvalidRequest",
    "RealtimeNotConfigured",
    "RealtimePayloadTooLarge",
    "RealtimeTimeout",
    "RealtimeUnavailable",
    "SessionDescription",
    "SessionGone",
    "SessionNotConnected",
    "SessionNotFound",
    "SessionState",
    "Track",
    "TrackError",
    "TracksReply",
]
