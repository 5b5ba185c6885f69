"""Settings -> the Authenticator of PARLEY_AUTH. Checked before the server opens anything."""

from __future__ import annotations

from parley.auth.base import Authenticator, NoAuth
from parley.auth.cache import UserCache
from parley.config import Settings
from parley.errors import ConfigError
from parley.store.users import UserStore


def check_auth_settings(settings: Settings) -> None:
    """Raise ConfigError for a mode that lacks what it needs (names the setting), before anything opens."""
    needed: list[tuple[str, object]] = []
    if settings.auth == "cloudflare-access":
        needed = [
            ("PARLEY_ACCESS_TEAM_DOMAIN", settings.access_team_domain),
            ("PARLEY_ACCESS_AUD", settings.access_aud),
        ]
    elif settings.auth == "trusted-header":
        # without the proxies' addresses anyone could send the header and be anyone
        needed = [
            ("PARLEY_TRUSTED_HEADER", settings.trusted_header),
            ("PARLEY_TRUSTED_PROXIES", settings.trusted_proxies),
        ]
    for name, value in needed:
        if not value:
            raise ConfigError(f"PARLEY_AUTH={settings.auth} needs {name}", field=name)


def build_authenticator(settings: Settings, users: UserStore) -> Authenticator:
    cache = UserCache(settings.auth_cache_seconds)
    if settings.auth == "token":
        from parley.auth.tokens import TokenAuth

        return TokenAuth(users, cache=cache)
    if settings.auth == "cloudflare-access":
        from parley.auth.access import AccessAuth

        return AccessAuth.from_settings(settings, users, cache=cache)
    if settings.auth == "trusted-header":
        from parley.auth.trusted import TrustedHeaderAuth

        return TrustedHeaderAuth.from_settings(settings, users, cache=cache)
    return NoAuth()
