"""Which browser origins may call the API and open session sockets."""

from __future__ import annotations

import re

from parley.config import Settings

#: pages served from this machine are always allowed, whatever their port
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


def origin_allowed(settings: Settings, origin: str) -> bool:
    return (
        "*" in settings.cors_origins
        or origin in settings.cors_origins
        or re.fullmatch(LOCAL_ORIGINS, origin) is not None
    )
