"""Authentication at the edge: every protected request and WebSocket handshake gets its user.

`Authenticate` (ASGI middleware) runs the configured Authenticator (auth/) before any route, so a
refused request never reaches one and a refused WebSocket is denied with 401 before the upgrade.
Open without credentials: the web app's files (`/`, `/static/*`), `/healthz` (which then says only
ok / not ok), and the sign-in exchange itself. `/metrics` needs an admin or PARLEY_METRICS_TOKEN.

A request authenticated by the session cookie (the web app) must also prove it comes from one of
this server's pages: a state-changing request or a WebSocket handshake needs an `Origin` (which
BrowserGuard has already checked) or `Sec-Fetch-Site: same-origin`. The cookie is SameSite=Strict
as well, so a cross-site form never carries it.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.auth import credentials
from parley.auth.tokens import COOKIE, bearer
from parley.errors import Forbidden, ParleyError, Unauthenticated
from parley.services import Services
from parley.store.users import User
from parley.web.errors import refuse
from parley.web.origins import STATE_CHANGING

#: paths anyone may fetch: the app's own files (they hold no data), liveness, the sign-in exchange
#: /devices: the Devices page (the app's page again: signed out, it shows the sign-in)
PUBLIC = frozenset({"/", "/devices", "/healthz", "/favicon.ico", "/api/auth/signin", "/api/auth/signout"})
#: /c/<id>: a conversation's page (the app's page again; the API checks the owner)
#: /xiaozhi/: devices carry device tokens, checked by web/xiaozhi.py, not user credentials
PUBLIC_PREFIXES = ("/static/", "/xiaozhi/", "/c/")
METRICS = "/metrics"


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def by_cookie(connection: HTTPConnection) -> bool:
    """Whether the request's credential is the web app's cookie (no Authorization header)."""
    return "authorization" not in connection.headers and COOKIE in connection.cookies


def check_same_site(scope: Scope) -> None:
    """A cookie-authenticated change must come from one of our pages (see the module docstring)."""
    if scope["type"] != "websocket" and scope.get("method") not in STATE_CHANGING:
        return
    headers = Headers(scope=scope)
    if "origin" in headers or headers.get("sec-fetch-site") == "same-origin":
        return
    raise Forbidden(
        "a request signed in by cookie must come from this server's pages (no Origin header)", field="Origin"
    )


class Authenticate:
    """ASGI middleware: `scope["state"]["user"]` for every request that reaches a protected route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        connection = HTTPConnection(scope)
        try:
            if scope["path"] == METRICS:
                user = await _metrics_reader(services, connection)
            else:
                user = await services.auth.authenticate(connection)
                if services.settings.auth == "token" and by_cookie(connection):
                    check_same_site(scope)
        except ParleyError as exc:
            await refuse(exc, scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


async def _metrics_reader(services: Services, connection: HTTPConnection) -> User | None:
    """/metrics: the scraper's PARLEY_METRICS_TOKEN, or an admin user."""
    expected = services.settings.metrics_token
    if expected is not None:
        try:
            presented = bearer(connection)
        except Unauthenticated:
            presented = None
        if presented is not None and credentials.same_secret(presented, expected.get_secret_value()):
            return None
    user = await services.auth.authenticate(connection)
    if not user.admin:
        raise Forbidden("/metrics is for admins (or the PARLEY_METRICS_TOKEN scraper)", field="user")
    return user
