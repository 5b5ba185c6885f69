"""The web app's sign-in (PARLEY_AUTH=token): an API token exchanged once for a session cookie.

POST /api/auth/signin   {token} -> {user}; sets `parley_session` (HttpOnly, SameSite=Strict,
                        Secure over https), a credential of its own that lasts PARLEY_SIGNIN_DAYS
                        and is stored, like tokens, only as a digest
POST /api/auth/signout  forgets the cookie's credential and clears the cookie
GET  /api/me            the user, their rates, what is left today and the PARLEY_AUTH mode (any mode)

The token never reaches the page's JavaScript storage: after the exchange the browser holds only
the cookie, which scripts cannot read.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.auth import credentials
from parley.auth.tokens import COOKIE, TokenAuth, issue
from parley.errors import NotFound
from parley.services import Services
from parley.store.users import CredentialKind
from parley.web import schemas
from parley.web.body import read_json, validate
from parley.web.users import current_user

router = APIRouter()


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1, max_length=credentials.MAX_LENGTH, description="An API token.")


class SignedIn(BaseModel):
    name: str
    admin: bool


def _token_auth(request: Request) -> TokenAuth:
    services: Services = request.app.state.services
    if not isinstance(services.auth, TokenAuth):
        raise NotFound("sign-in is for PARLEY_AUTH=token", field="PARLEY_AUTH")
    return services.auth


@router.post(
    "/api/auth/signin",
    response_model=SignedIn,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(SignInIn),
    summary="Exchange an API token for the web app's session cookie",
)
async def signin(request: Request) -> JSONResponse:
    auth = _token_auth(request)
    body = validate(SignInIn, await read_json(request, limit=4096))
    user = await auth.token_user(body.token, CredentialKind.API)
    services: Services = request.app.state.services
    lifetime = int(services.settings.signin_days * 86400)
    cookie = await issue(auth.users, user, CredentialKind.COOKIE, expires_at=time.time() + lifetime)
    response = JSONResponse({"name": user.name, "admin": user.admin})
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post(
    "/api/auth/signout",
    responses=schemas.ERRORS,
    summary="Sign the web app out: its session cookie stops working",
)
async def signout(request: Request) -> JSONResponse:
    auth = _token_auth(request)
    cookie = request.cookies.get(COOKIE)
    if cookie and len(cookie) <= credentials.MAX_LENGTH:
        await auth.sign_out(cookie)
    response = JSONResponse({"signedOut": True})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/api/me", responses=schemas.ERRORS, summary="Who I am, my rate limits and what is left today")
async def me(request: Request) -> dict[str, Any]:
    user = current_user(request)
    services: Services = request.app.state.services
    if services.user_limits is None:
        answer: dict[str, Any] = {
            "user": {"name": user.name, "admin": user.admin},
            "limits": {},
            "quotas": {},
        }
    else:
        answer = await services.user_limits.status(user)
    # the web app shows a name and "Sign out" by it (signin.js)
    return {**answer, "auth": services.settings.auth}
