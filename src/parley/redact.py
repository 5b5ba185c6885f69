"""Keeping secrets out of log lines and start-up output.

What a model server answers in an error (its text, which may quote the API key it was sent) and
the addresses Parley calls (which may carry credentials, `https://user:pass@host/v1`) go to the
log only, and only after passing through here. Clients never get them at all: the providers'
errors say which provider failed and how, in words of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from parley.config import Settings

MASK = "***"

# The user and password of a URL (`https://user:key@host`): masked always.
_USERINFO = re.compile(r"(?<=://)[^/\s@]+(?=@)")
# Shapes of secrets an upstream may echo: OpenAI-style keys (sk-..., sk-proj-...), Authorization
# header values, credentials in query strings, and long opaque tokens (Cloudflare API tokens are
# 40 characters).
_SHAPES = (
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-*]{4,}"),
    re.compile(r"(?i)\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(r"(?i)(?<=[?&;])(?:api[_-]?key|key|token|access_token|secret|password|sig|signature)=[^&\s]+"),
    re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])"),
)


def redact(text: str, secrets: Iterable[str | None] = (), *, shapes: bool = True) -> str:
    """`text` with every known secret and URL credential replaced by ***, and with `shapes`
    (for text from elsewhere, such as an upstream's error) every secret-shaped string too."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(MASK, text)
    if shapes:
        for shape in _SHAPES:
            text = shape.sub(MASK, text)
    return text


def safe_url(url: str) -> str:
    """`url` without user, password, query or fragment: fit for a log line or a start-up banner."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return redact(url)
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_secrets(url: str | None) -> list[str]:
    """The user name and password in `url`, to be masked wherever they might be quoted."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    return [s for s in (parts.username, parts.password) if s]


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value in `settings`: the SecretStr fields and credentials inside any URL."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            found += url_secrets(value)
    return found


# An absolute path on the server (a model's folder, a cache file, the data dir): a filesystem root
# Unix servers use, then at least one more part. API routes (`/api/...`) are not one.
_SERVER_PATH = re.compile(
    r"(?<![\w.:/~-])(?:~|/(?:home|root|tmp|usr|var|opt|etc|srv|mnt|media|data|work|nix|run|"
    r"Users|private|app|workspace|models))(?:/[^\s/'\"()\[\],;:]+)+/?"
)
SERVER_PATH = "<server path>"


def without_paths(text: str) -> str:
    """`text` with every server path replaced by <server path>: what a client may be told (the
    log keeps the whole text)."""
    return _SERVER_PATH.sub(SERVER_PATH, text)
