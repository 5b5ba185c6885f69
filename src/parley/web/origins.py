"""Which hosts a request may address, and which browser pages may change state.

Two checks a browser cannot make for us:
- DNS rebinding: a page on evil.example re-points its own name at 127.0.0.1 and is then
  "same-origin" with Parley, so the Host header must name a host we serve (PARLEY_ALLOWED_HOSTS).
- Cross-site writes: CORS only hides responses; a form post (multipart /api/transcribe) or a
  WebSocket handshake from a foreign page still reaches the server. So every state-changing
  request that carries an Origin must come from this origin or from PARLEY_CORS_ORIGINS. A request
  without an Origin is not from a browser page (curl, scripts) and is let through.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.config import Settings
from parley.errors import Forbidden, InvalidInput, ParleyError
from parley.web.errors import refuse

#: methods a foreign page must not send us (GET, HEAD and OPTIONS change nothing)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: listen addresses that name no host of their own
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def host_name(host: str) -> str:
    """The host part of a Host header: no port, no brackets, lower case, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """PARLEY_ALLOWED_HOSTS, plus the address `parley serve` listens on unless it is a wildcard."""
    names = {host_name(h) for h in settings.allowed_hosts}
    if settings.host not in WILDCARDS:
        names.add(host_name(settings.host))
    return frozenset(names)


def same_origin(origin: str, host: str) -> bool:
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and rest.lower() == host.strip().lower()


def origin_allowed(settings: Settings, origin: str, host: str) -> bool:
    """This page's origin (`Origin` as the browser sent it) may call us: same-origin or configured."""
    return "*" in settings.cors_origins or origin in settings.cors_origins or same_origin(origin, host)


class BrowserGuard:
    """ASGI middleware: the Host allow-list on every request, the Origin check on state changes."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = allowed_hosts(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            problem = self.check(scope)
            if problem is not None:
                await refuse(problem, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> ParleyError | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        # HTTP/1.0 clients may send no Host: nothing to rebind, and no browser does that.
        if host is not None and "*" not in self.hosts and host_name(host) not in self.hosts:
            return InvalidInput(
                f"Host header {host[:100]!r} is not a host this server answers to (PARLEY_ALLOWED_HOSTS)",
                field="Host",
            )
        changes = scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING
        origin = headers.get("origin")
        if changes and origin is not None and not origin_allowed(self.settings, origin, host or ""):
            return Forbidden(
                f"Origin {origin[:100]!r} may not call this server (same origin or PARLEY_CORS_ORIGINS)",
                field="Origin",
            )
        return None
