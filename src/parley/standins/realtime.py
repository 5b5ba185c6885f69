"""A local Cloudflare Realtime API; for now the TURN key endpoints (the SFU API will join them here).

It answers with the documented shapes and status codes, so `CloudflareTURN` can be tested
without Cloudflare:

    app = create_app(turn_key_id="k", turn_token="t")
    with BackgroundServer(app) as server:
        turn = CloudflareTURN(key_id="k", api_token="t", base_url=server.url + "/v1")

    POST /v1/turn/keys/{key}/credentials/generate-ice-servers   {"ttl": N} -> 201 {"iceServers": [...]}
    POST /v1/turn/keys/{key}/credentials/generate               {"ttl": N} -> 201 {"iceServers": {...}}
    POST /v1/turn/keys/{key}/credentials/{username}/revoke      -> 204

The generated list carries the port-53 URLs Cloudflare lists (browsers block them; clients drop
them). The TURN docs show no error body; errors here use the SFU API's `errorCode` and
`errorDescription`, and clients should rely only on the status code. State for tests: `requests` (without credentials), `issued` {username: {ttl, credential,
revoked}}.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.standins.common import init_state, record

#: the maximum credential lifetime Cloudflare documents (48 h)
MAX_TTL = 48 * 3600
STUN_URLS = ("stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53")
TURN_URLS = (
    "turn:turn.cloudflare.com:3478?transport=udp",
    "turn:turn.cloudflare.com:53?transport=udp",
    "turn:turn.cloudflare.com:3478?transport=tcp",
    "turn:turn.cloudflare.com:80?transport=tcp",
    "turns:turn.cloudflare.com:5349?transport=tcp",
    "turns:turn.cloudflare.com:443?transport=tcp",
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": status, "errorDescription": message}, status_code=status)


def create_app(
    *,
    turn_key_id: str = "test-turn-key",
    turn_token: str = "test-turn-token",
    legacy_only: bool = False,
    delay: float = 0.0,
) -> Starlette:
    """A Realtime API stand-in; the base URL for clients is `<server url>/v1`.

    `legacy_only` answers 404 on `generate-ice-servers`, like a deployment without it, so that
    only the older `generate` works; `delay` holds every answer back (timeouts).
    """

    async def check(request: Request) -> Response | None:
        record(request, key_id=request.path_params["key_id"])
        await asyncio.sleep(delay)
        if not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {turn_token}"):
            return _error(401, "Unauthorized")
        if request.path_params["key_id"] != turn_key_id:
            return _error(404, "TURN key not found")
        return None

    async def issue(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        refused = await check(request)
        if refused is not None:
            return None, refused
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        ttl = payload.get("ttl") if isinstance(payload, dict) else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL:
            return None, _error(400, f"ttl must be an integer from 1 to {MAX_TTL}")
        request.app.state.requests[-1]["ttl"] = ttl
        username = secrets.token_hex(16)
        credential = secrets.token_hex(24)
        request.app.state.issued[username] = {"ttl": ttl, "credential": credential, "revoked": False}
        turn = {"urls": list(TURN_URLS), "username": username, "credential": credential}
        return turn, None

    async def generate_ice_servers(request: Request) -> Response:
        if legacy_only:
            record(request, key_id=request.path_params["key_id"])
            return _error(404, "Not found")
        turn, refused = await issue(request)
        if refused is not None:
            return refused
        return JSONResponse({"iceServers": [{"urls": list(STUN_URLS)}, turn]}, status_code=201)

    async def generate(request: Request) -> Response:
        turn, refused = await issue(request)
        if refused is not None:
            return refused
        return JSONResponse({"iceServers": turn}, status_code=201)

    async def revoke(request: Request) -> Response:
        refused = await check(request)
        if refused is not None:
            return refused
        issued = request.app.state.issued.get(request.path_params["username"])
        if issued is None:
            return _error(404, "credential not found")
        issued["revoked"] = True
        return Response(status_code=204)

    prefix = "/v1/turn/keys/{key_id}/credentials"
    app = Starlette(
        routes=[
            Route(f"{prefix}/generate-ice-servers", generate_ice_servers, methods=["POST"]),
            Route(f"{prefix}/generate", generate, methods=["POST"]),
            Route(f"{prefix}/{{username}}/revoke", revoke, methods=["POST"]),
        ]
    )
    init_state(app.state)
    app.state.issued = {}
    return app
