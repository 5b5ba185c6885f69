"""Whether the configured mode may listen where it is asked to.

PARLEY_AUTH=none lets anyone who reaches the port do everything, so it is allowed only when every
listening address is loopback; PARLEY_ALLOW_OPEN=true (with an explicit PARLEY_AUTH=none)
overrides, with a warning at every start.
"""

from __future__ import annotations

import ipaddress

from parley.config import Settings
from parley.errors import ConfigError


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or a wildcard) may be reachable from anywhere


def check_exposure(settings: Settings, hosts: list[str], *, auth_explicit: bool) -> str | None:
    """Raise ConfigError when `hosts` expose an unauthenticated server; a warning to log, or None."""
    if settings.auth != "none":
        return None
    exposed = [h for h in hosts if not is_loopback(h)]
    if not exposed:
        return None
    if settings.allow_open and auth_explicit:
        return (
            f"PARLEY_AUTH=none on {', '.join(exposed)}: anyone who can reach this port can read every "
            "conversation and use the models (PARLEY_ALLOW_OPEN=true)"
        )
    raise ConfigError(
        f"refusing to listen on {', '.join(exposed)} without authentication: set PARLEY_AUTH to token, "
        "cloudflare-access or trusted-header (or, knowingly, PARLEY_AUTH=none with PARLEY_ALLOW_OPEN=true)",
        field="PARLEY_AUTH",
    )
