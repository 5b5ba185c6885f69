"""ICE servers: from configuration (and Cloudflare TURN), served to browsers and used by our peers.

aiortc uses only the first STUN and the first TURN URL it is given, so the order of the list
matters: put the URL that works from the server first (UDP where UDP passes, else TCP/TLS).
Browsers block port 53, so such URLs are dropped from what browsers get.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from parley.errors import ConfigError

SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(slots=True, frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_browser(self) -> dict[str, Any]:
        """The `RTCIceServer` dictionary of the browser API (what GET /api/ice lists)."""
        urls = [u for u in self.urls if _port(u) != 53]
        out: dict[str, Any] = {"urls": urls}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(slots=True, frozen=True)
class IceConfig:
    """The ICE servers of one call, and a warning when generated TURN servers are missing."""

    servers: tuple[IceServer, ...]
    warning: str | None = None

    def to_browser(self) -> dict[str, Any]:
        """The body of GET /api/ice: `{"iceServers": [...], "warning"?: str}`."""
        out: dict[str, Any] = {"iceServers": [s.to_browser() for s in self.servers]}
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def parse_ice_servers(
    entries: Iterable[Mapping[str, Any]], setting: str = "PARLEY_ICE_SERVERS"
) -> tuple[IceServer, ...]:
    """Check a JSON list of `{"urls": str | [str], "username"?, "credential"?}` at start-up."""
    servers = []
    for i, entry in enumerate(entries):
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{setting}[{i}].urls must be a URL or a list of URLs", field=setting)
        for url in urls:
            if not url.startswith(SCHEMES):
                raise ConfigError(
                    f"{setting}[{i}]: {url!r} is not a stun:, stuns:, turn: or turns: URL", field=setting
                )
            if url.startswith(("turn:", "turns:")) and not (
                entry.get("username") and entry.get("credential")
            ):
                raise ConfigError(
                    f"{setting}[{i}]: TURN URL {url!r} needs username and credential", field=setting
                )
        username, credential = entry.get("username"), entry.get("credential")
        servers.append(
            IceServer(
                tuple(urls),
                str(username) if username is not None else None,
                str(credential) if credential is not None else None,
            )
        )
    return tuple(servers)


def udp_first(servers: Iterable[IceServer]) -> tuple[IceServer, ...]:
    """Port-53 URLs dropped, and in each server UDP before TCP before TLS (order otherwise kept).

    aiortc takes the first STUN and the first TURN URL it meets, so this makes it relay over
    UDP where the server offers UDP. A server left without URLs is dropped.
    """
    out = []
    for server in servers:
        urls = sorted((u for u in server.urls if _port(u) != 53), key=_transport_rank)
        if urls:
            out.append(IceServer(tuple(urls), server.username, server.credential))
    return tuple(out)


def _transport_rank(url: str) -> int:
    if url.startswith(("stuns:", "turns:")):
        return 2
    return 1 if "transport=tcp" in url.lower() else 0


def _port(url: str) -> int | None:
    # stun:host:port?transport=udp is not a hierarchical URL; give it one to parse the port.
    try:
        return urlsplit("//" + url.split(":", 1)[1].split("?", 1)[0]).port
    except ValueError:
        return None
