"""The web app: plain files from `parley/static`, no build step.

`/`, a conversation's own address, `/c/<id>`, and `/devices` serve the same page; the app reads
the id (or the page) from the address. The page holds no data (the API checks whose conversation
it is), so `/` and `/c/` are public (web/auth.py).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from parley.sessions.registry import check_session_id
from parley.web.headers import APP_CSP

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: the prefix of a conversation's address; web/auth.py keeps it public
CONVERSATION_PREFIX = "/c/"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/devices", include_in_schema=False)
async def devices_page() -> FileResponse:
    """The Devices page: the same app, which reads the page from the address."""
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": APP_CSP, "X-Frame-Options": "DENY"},
    )


@cache
def _nested_index(mtime: float) -> bytes:
    # one folder down: the page's own files are ../static/ (the app finds the API from its modules)
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return html.replace('="static/', '="../static/').encode()


@router.get(CONVERSATION_PREFIX + "{sid}", include_in_schema=False)
async def conversation_page(sid: str) -> Response:
    check_session_id(sid, "sessionId")
    body = _nested_index((STATIC_DIR / "index.html").stat().st_mtime)
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": APP_CSP, "X-Frame-Options": "DENY"},
    )
