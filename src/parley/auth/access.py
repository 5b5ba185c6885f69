"""PARLEY_AUTH=cloudflare-access: the user is whoever Cloudflare Access signed the request for.

Access puts a JWT in `Cf-Access-Jwt-Assertion` on every request it lets through. It is checked
against the team's published keys (RS256 only), the application's AUD tag and the team domain as
issuer; its `email` in lower case (or a service token's `common_name`) names the user.

Keys are cached by `kid`. The whole set is fetched again when it is an hour old; a `kid` not in
it triggers one refetch, shared by every request waiting on that kid and at most one per
`UNKNOWN_KID_INTERVAL` seconds, so a stream of made-up kids cannot turn Parley into a load on
Cloudflare's key server. All timing (token lifetimes included) follows the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from starlette.requests import HTTPConnection

from parley.auth import credentials
from parley.auth.base import Authenticator
from parley.auth.cache import UserCache
from parley.config import Settings
from parley.errors import ConfigError, InvalidInput, ProviderUnavailable, Unauthenticated
from parley.redact import safe_url
from parley.store.users import User, UserStore, check_user_name

log = logging.getLogger(__name__)

HEADER = "cf-access-jwt-assertion"
CERTS_PATH = "/cdn-cgi/access/certs"
#: Access tokens are about 1 KiB; anything past this is refused before it is parsed
MAX_TOKEN_BYTES = 8 * 1024
#: how old the cached key set may grow before it is fetched again
KEYS_MAX_AGE = 3600.0
#: the fewest seconds between two refetches caused by a kid not in the cache
UNKNOWN_KID_INTERVAL = 10.0
#: after a failed fetch, how long the cached keys are used before trying again
RETRY_AFTER_FAILURE = 10.0
#: seconds of clock difference between Cloudflare and this host that exp / nbf / iat forgive
LEEWAY = 30.0
FETCH_TIMEOUT = 10.0
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud"]


class AccessAuth(Authenticator):
    mode = "cloudflare-access"

    def __init__(
        self,
        *,
        team_domain: str,
        audience: str,
        users: UserStore,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        cache: UserCache | None = None,
    ) -> None:
        self.team_domain = team_domain.rstrip("/")
        self.audience = audience
        self.users = users
        self.certs_url = self.team_domain + CERTS_PATH
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=FETCH_TIMEOUT)
        self._clock = clock
        self.cache = cache if cache is not None else UserCache(0, clock=clock)
        self._keys: dict[str, RSAPublicKey] = {}
        self._next_refresh = float("-inf")
        self._last_unknown_fetch = float("-inf")
        # One fetch at a time: concurrent requests that need the same fetch share it.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, users: UserStore, *, cache: UserCache | None = None
    ) -> AccessAuth:
        domain = (settings.access_team_domain or "").strip()
        if not domain:
            raise ConfigError(
                "PARLEY_AUTH=cloudflare-access needs PARLEY_ACCESS_TEAM_DOMAIN "
                "(https://<team>.cloudflareaccess.com)",
                field="PARLEY_ACCESS_TEAM_DOMAIN",
            )
        try:
            parts = urlsplit(domain)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(
                "PARLEY_ACCESS_TEAM_DOMAIN must be a URL like https://<team>.cloudflareaccess.com",
                field="PARLEY_ACCESS_TEAM_DOMAIN",
            )
        audience = (settings.access_aud or "").strip()
        if not audience:
            raise ConfigError(
                "PARLEY_AUTH=cloudflare-access needs PARLEY_ACCESS_AUD (the Access application's AUD tag)",
                field="PARLEY_ACCESS_AUD",
            )
        return cls(team_domain=domain, audience=audience, users=users, cache=cache)

    async def authenticate(self, connection: HTTPConnection) -> User:
        values = connection.headers.getlist(HEADER)
        if not values:
            raise Unauthenticated("no Cloudflare Access token (Cf-Access-Jwt-Assertion header)")
        if len(values) > 1:
            raise Unauthenticated("more than one Cf-Access-Jwt-Assertion header")
        token = values[0].strip()
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(
                f"the Cloudflare Access token is longer than {MAX_TOKEN_BYTES} bytes", limit=MAX_TOKEN_BYTES
            )
        # A token seen and verified before is not verified again until its exp or the cache's end.
        key = credentials.digest(token)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        claims = await self._verified_claims(token)
        name = _identity(claims)
        try:
            check_user_name(name)
        except InvalidInput:
            raise Unauthenticated("the Cloudflare Access token names no acceptable user name") from None
        user = await self.users.identified_user(name)
        if user.disabled:
            raise Unauthenticated("this user is disabled")
        exp = claims.get("exp")
        self.cache.put(key, user, expires_at=float(exp) if isinstance(exp, int | float) else self._clock())
        return user

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed Cloudflare Access token") from None
        # Checked before any key is looked up: `none`, or HS256 keyed with the public key, never
        # gets as far as a signature check.
        if header.get("alg") != "RS256":
            raise Unauthenticated("the Cloudflare Access token is not signed with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the Cloudflare Access token names no signing key (kid)")
        key = await self._key(kid)
        if key is None:
            raise Unauthenticated("the Cloudflare Access token is signed by an unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.team_domain,
                # PyJWT reads the time itself; the times are checked below on our clock.
                options={
                    "require": REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the Cloudflare Access token has a bad signature") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the Cloudflare Access token is for another application (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the Cloudflare Access token is from another team (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the Cloudflare Access token lacks the {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated("the Cloudflare Access token is not signed with RS256") from None
        except jwt.PyJWTError:
            raise Unauthenticated("malformed Cloudflare Access token") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthenticated(f"the Cloudflare Access token's {name} claim is not a number")
            times[name] = float(value)
        if times["exp"] <= now - LEEWAY:
            raise Unauthenticated("the Cloudflare Access token has expired")
        if times.get("nbf", now) > now + LEEWAY or times["iat"] > now + LEEWAY:
            raise Unauthenticated("the Cloudflare Access token is not yet valid")

    async def _key(self, kid: str) -> RSAPublicKey | None:
        if self._clock() >= self._next_refresh:
            async with self._lock:
                if self._clock() >= self._next_refresh:
                    await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            async with self._lock:
                # A request that held the lock may have fetched this very kid meanwhile.
                key = self._keys.get(kid)
                now = self._clock()
                if key is None and now - self._last_unknown_fetch >= UNKNOWN_KID_INTERVAL:
                    self._last_unknown_fetch = now
                    await self._refresh()
                    key = self._keys.get(kid)
        if key is None and not self._keys:
            raise self._unavailable("has no signing keys yet")
        return key

    async def _refresh(self) -> None:
        """Fetch the key set; on failure keep using the cached keys a little longer if there are any."""
        now = self._clock()
        try:
            self._keys = await self._fetch()
        except ProviderUnavailable as exc:
            self._next_refresh = now + RETRY_AFTER_FAILURE
            if not self._keys:
                raise
            log.warning("%s; using the %d keys fetched before", exc.message, len(self._keys))
            return
        self._next_refresh = now + KEYS_MAX_AGE

    async def _fetch(self) -> dict[str, RSAPublicKey]:
        try:
            response = await self._http.get(self.certs_url, timeout=FETCH_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(f"could not reach it ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise self._unavailable(f"answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise self._unavailable("answered with something that is not JSON") from exc
        jwks = body.get("keys") if isinstance(body, dict) else None
        keys: dict[str, RSAPublicKey] = {}
        for jwk in jwks if isinstance(jwks, list) else ():
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
                continue
            try:
                key = PyJWK(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                continue
            if isinstance(key, RSAPublicKey):
                keys[jwk["kid"]] = key
        if not keys:
            raise self._unavailable("published no RS256 keys")
        return keys

    def _unavailable(self, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"the Cloudflare Access key server at {safe_url(self.certs_url)} {what}",
            field="PARLEY_ACCESS_TEAM_DOMAIN",
        )


def _identity(claims: dict[str, Any]) -> str:
    """The name the token is for: a person's email (lower case: one person, however an identity
    provider spells it), else a service token's client id."""
    email = claims.get("email")
    if isinstance(email, str) and email.strip():
        return email.strip().lower()
    common_name = claims.get("common_name")
    if isinstance(common_name, str) and common_name:
        return common_name
    raise Unauthenticated("the Cloudflare Access token names no user (neither email nor common_name)")
