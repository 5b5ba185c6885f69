"""A local Cloudflare Access: its key endpoint and the JWTs it puts on requests.

    issuer = AccessIssuer(team_domain=f"http://127.0.0.1:{port}", audience="aud-tag")
    with BackgroundServer(issuer.app, port=port):
        auth = AccessAuth(team_domain=issuer.team_domain, audience="aud-tag", users=store)
        headers = {"Cf-Access-Jwt-Assertion": issuer.sign(email="ada@example.com")}

    GET /cdn-cgi/access/certs -> {"keys": [JWK...], "public_cert": {kid, cert}, "public_certs": [...]}

As Cloudflare does, the set lists the current key first and the previous one after it
(`rotate()` makes a new current key, `drop_oldest()` retires one), each also as a self-signed PEM
certificate. Tokens carry `kid` and RS256 in their header and Access's claims. State for tests:
`fetches` (how often the keys were read); `failing` answers 503.
"""

from __future__ import annotations

import base64
import datetime
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CERTS_PATH = "/cdn-cgi/access/certs"
#: Access's default application session is 24 h; its tokens live as long
DEFAULT_LIFETIME = 24 * 3600


@dataclass(slots=True, frozen=True)
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    cert_pem: str

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "e": _b64_uint(numbers.e),
            "n": _b64_uint(numbers.n),
        }

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_signing_key(team_domain: str = "test.cloudflareaccess.com") -> SigningKey:
    """An RSA key pair with a random kid (64 hex digits, like Cloudflare's) and a self-signed cert."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, team_domain[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=49))
        .sign(private, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return SigningKey(kid=secrets.token_hex(32), private=private, cert_pem=pem)


class AccessIssuer:
    """One Access team and application: the keys it publishes and the tokens it signs."""

    def __init__(
        self,
        *,
        team_domain: str = "https://test.cloudflareaccess.com",
        audience: str = "test-access-aud",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.team_domain = team_domain.rstrip("/")
        self.audience = audience
        self.clock = clock
        #: newest first: [current, previous, ...]
        self.keys: list[SigningKey] = [new_signing_key(self._host())]
        self.fetches = 0
        self.failing = False
        self.app = Starlette(routes=[Route(CERTS_PATH, self._certs, methods=["GET"])])

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    def rotate(self) -> SigningKey:
        """A new current key; the one before stays published (Access keeps it valid for 7 days)."""
        key = new_signing_key(self._host())
        self.keys = [key, *self.keys]
        return key

    def drop_oldest(self) -> SigningKey:
        if len(self.keys) < 2:
            raise ValueError("the current key cannot be dropped")
        dropped = self.keys[-1]
        self.keys = self.keys[:-1]
        return dropped

    def certs(self) -> dict[str, Any]:
        keys = list(self.keys)
        return {
            "keys": [key.jwk() for key in keys],
            "public_cert": {"kid": keys[0].kid, "cert": keys[0].cert_pem},
            "public_certs": [{"kid": key.kid, "cert": key.cert_pem} for key in keys],
        }

    def claims(
        self, *, email: str | None = "user@example.com", common_name: str | None = None
    ) -> dict[str, Any]:
        """Access's claims at the issuer's clock: a person's, or a service token's with `common_name`."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "aud": [self.audience],
            "iss": self.team_domain,
            "iat": now,
            "nbf": now,
            "exp": now + DEFAULT_LIFETIME,
            "type": "app",
        }
        if common_name is not None:
            claims |= {"common_name": common_name, "sub": ""}
        else:
            claims |= {
                "email": email,
                "sub": secrets.token_hex(16),
                "identity_nonce": secrets.token_urlsafe(12),
                "country": "NL",
            }
        return claims

    def sign(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **overrides: Any,
    ) -> str:
        """A token as Access mints it. `overrides` replace claims (None removes one); `key` signs
        with another private key, under `kid` or the current key's kid (a forgery)."""
        payload = dict(self.claims() if claims is None else claims)
        for name, value in overrides.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        signer = key if key is not None else self._private_of(kid)
        return jwt.encode(
            payload, signer, algorithm="RS256", headers={"kid": kid if kid is not None else self.current.kid}
        )

    def service_token(self, common_name: str, **overrides: Any) -> str:
        return self.sign(self.claims(common_name=common_name), **overrides)

    def _private_of(self, kid: str | None) -> rsa.RSAPrivateKey:
        for key in self.keys:
            if kid is None or key.kid == kid:
                return key.private
        # An unpublished kid: sign with the current key, so only the kid is wrong.
        return self.current.private

    def _host(self) -> str:
        return self.team_domain.split("://", 1)[-1]

    async def _certs(self, request: Request) -> Response:
        self.fetches += 1
        if self.failing:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse(self.certs())


def _b64_uint(value: int) -> str:
    data = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
