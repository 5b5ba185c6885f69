"""The one place where exceptions become HTTP JSON and WebSocket events (one error shape)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from parley.errors import InvalidInput, ParleyError, RateLimited, Unauthenticated
from parley.text import valid_text

log = logging.getLogger("parley.web")

#: WebSocket close codes for errors that end a connection
WS_POLICY_VIOLATION = 1008
WS_MESSAGE_TOO_BIG = 1009
WS_INTERNAL_ERROR = 1011
WS_TRY_AGAIN_LATER = 1013


class ErrorJSON(JSONResponse):
    """JSON that always encodes: an error may quote text that is not valid Unicode."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return valid_text(text).encode("utf-8")


def error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ParleyError):
        return exc.to_dict()
    return {"error": "Internal server error", "code": "internal_error", "status": 500}


def error_headers(exc: BaseException) -> dict[str, str]:
    """Headers an error answer carries: when to retry a refused request, how to authenticate."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return {"Retry-After": str(max(1, exc.retry_after))}
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": 'Bearer realm="parley"'}
    return {}


def error_response(exc: BaseException) -> JSONResponse:
    body = error_body(exc)
    return ErrorJSON(body, status_code=int(body["status"]), headers=error_headers(exc))


async def refuse(problem: BaseException, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request refused before it reached a route (middleware): HTTP JSON, or a WebSocket
    handshake denied with the same status and body (close 1008 where the server cannot)."""
    response = error_response(problem)
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        message = problem.message if isinstance(problem, ParleyError) else "refused"
        await websocket.close(WS_POLICY_VIOLATION, message[:120])


def _from_validation(exc: RequestValidationError) -> InvalidInput:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    return InvalidInput(f"{field}: {first.get('msg', 'invalid value')}", field=field)


def install(app: FastAPI) -> None:
    async def on_parley(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(_from_validation(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": str(exc.detail), "code": code, "status": exc.status_code},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def on_gone(request: Request, exc: Exception) -> Response:
        # The client hung up while sending its body: nobody will read an answer, and it is no
        # server error (it used to be logged as one, with a traceback, twice).
        log.debug("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(exc)

    app.add_exception_handler(ParleyError, on_parley)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_gone)
    app.add_exception_handler(Exception, on_unexpected)
