"""AccessAuth against a local Cloudflare Access (real keys, real HTTP, a real SQLite store).

Time is a fake clock shared by the issuer and the authenticator, set years from now: a check that
read the wall clock instead would see every token as issued in the future.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request

from parley.auth.access import LEEWAY, MAX_TOKEN_BYTES, AccessAuth
from parley.errors import ConfigError, ProviderUnavailable, Unauthenticated
from parley.standins.access import AccessIssuer
from parley.standins.server import BackgroundServer, free_port
from parley.store.sqlite import SQLiteStore
from tests.conftest import make_settings

AUD = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self, now: float = 2_000_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> Iterator[AccessIssuer]:
    port = free_port()
    issuer = AccessIssuer(team_domain=f"http://127.0.0.1:{port}", audience=AUD, clock=clock)
    with BackgroundServer(issuer.app, port=port):
        yield issuer


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture
async def auth(issuer: AccessIssuer, store: SQLiteStore, clock: Clock) -> AsyncIterator[AccessAuth]:
    auth = AccessAuth(team_domain=issuer.team_domain, audience=AUD, users=store, clock=clock)
    yield auth
    await auth.aclose()


def request(*tokens: str) -> Request:
    headers = [(b"cf-access-jwt-assertion", token.encode("latin-1")) for token in tokens]
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/history",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
        }
    )


async def refused(auth: AccessAuth, *tokens: str) -> str:
    """The 401's message; it must never quote the token."""
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(request(*tokens))
    assert caught.value.status == 401
    for token in tokens:
        assert token not in caught.value.message
    return caught.value.message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())


# -- accepted ------------------------------------------------------------------------------------


async def test_a_valid_token_is_its_email_user_made_on_first_sight(
    auth: AccessAuth, issuer: AccessIssuer, store: SQLiteStore
) -> None:
    assert await store.user_named("ada@example.com") is None
    first = await auth.authenticate(request(issuer.sign(email="ada@example.com")))
    second = await auth.authenticate(request(issuer.sign(email="ada@example.com")))
    assert first.name == "ada@example.com" and not first.admin
    assert second == first
    assert [user.name for user in await store.list_users()].count("ada@example.com") == 1


async def test_keys_are_fetched_once_for_many_requests(auth: AccessAuth, issuer: AccessIssuer) -> None:
    assert issuer.fetches == 0
    for n in range(5):
        await auth.authenticate(request(issuer.sign(email=f"user{n}@example.com")))
    assert issuer.fetches == 1


async def test_concurrent_first_requests_share_one_fetch(auth: AccessAuth, issuer: AccessIssuer) -> None:
    tokens = [issuer.sign(email=f"user{n}@example.com") for n in range(8)]
    users = await asyncio.gather(*(auth.authenticate(request(token)) for token in tokens))
    assert sorted(user.name for user in users) == sorted(f"user{n}@example.com" for n in range(8))
    assert issuer.fetches == 1


async def test_a_service_token_is_the_user_its_common_name_names(
    auth: AccessAuth, issuer: AccessIssuer
) -> None:
    token = issuer.service_token("88bf3b6d86161464f6509f7219099e57.access")
    claims = issuer.claims(common_name="x")
    assert "email" not in claims and claims["sub"] == ""
    user = await auth.authenticate(request(token))
    assert user.name == "88bf3b6d86161464f6509f7219099e57.access"


async def test_an_audience_list_holding_ours_among_others_is_accepted(
    auth: AccessAuth, issuer: AccessIssuer
) -> None:
    user = await auth.authenticate(request(issuer.sign(aud=["another-app", AUD])))
    assert user.name == "user@example.com"


async def test_a_trailing_slash_on_the_team_domain_is_the_same_issuer(
    issuer: AccessIssuer, store: SQLiteStore, clock: Clock
) -> None:
    auth = AccessAuth(team_domain=issuer.team_domain + "/", audience=AUD, users=store, clock=clock)
    try:
        assert (await auth.authenticate(request(issuer.sign()))).name == "user@example.com"
    finally:
        await auth.aclose()


# -- refused: the header -------------------------------------------------------------------------


async def test_no_header_is_refused(auth: AccessAuth) -> None:
    assert "no Cloudflare Access token" in await refused(auth)


async def test_the_header_twice_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    token = issuer.sign()
    assert "more than one" in await refused(auth, token, token)


async def test_an_over_long_token_is_refused_before_any_work(auth: AccessAuth, issuer: AccessIssuer) -> None:
    token = issuer.sign(padding="x" * MAX_TOKEN_BYTES)
    assert "longer than" in await refused(auth, token)
    assert issuer.fetches == 0


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "WzFd.e30.", "...", "ünïcode"])
async def test_a_malformed_token_is_refused(auth: AccessAuth, token: str) -> None:
    assert "malformed" in await refused(auth, token)


async def test_a_token_without_a_kid_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    token = unsigned({"alg": "RS256", "typ": "JWT"}, issuer.claims()) + ".c2ln"
    assert "names no signing key" in await refused(auth, token)


# -- refused: the claims -------------------------------------------------------------------------


async def test_an_expired_token_is_refused(auth: AccessAuth, issuer: AccessIssuer, clock: Clock) -> None:
    token = issuer.sign(exp=int(clock()) + 60)
    assert (await auth.authenticate(request(token))).name == "user@example.com"
    clock.advance(60 + LEEWAY - 1)
    await auth.authenticate(request(token))  # within the leeway
    clock.advance(2)
    assert "expired" in await refused(auth, token)


async def test_a_token_not_yet_valid_is_refused(auth: AccessAuth, issuer: AccessIssuer, clock: Clock) -> None:
    assert "not yet valid" in await refused(auth, issuer.sign(nbf=int(clock()) + 3600))
    assert "not yet valid" in await refused(auth, issuer.sign(iat=int(clock()) + 3600))
    clock.advance(3600)
    await auth.authenticate(request(issuer.sign(nbf=int(clock()))))


async def test_a_token_for_another_application_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    assert "(aud)" in await refused(auth, issuer.sign(aud=["another-app"]))


async def test_a_token_from_another_team_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    assert "(iss)" in await refused(auth, issuer.sign(iss="https://other.cloudflareaccess.com"))


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud"])
async def test_a_token_without_a_required_claim_is_refused(
    auth: AccessAuth, issuer: AccessIssuer, claim: str
) -> None:
    assert f"lacks the {claim} claim" in await refused(auth, issuer.sign(**{claim: None}))


async def test_a_time_claim_that_is_no_number_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    assert "not a number" in await refused(auth, issuer.sign(nbf="soon"))


async def test_a_token_naming_no_user_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    assert "names no user" in await refused(auth, issuer.sign(email=None))
    assert "no acceptable user name" in await refused(auth, issuer.sign(email="two words@example.com"))


async def test_a_disabled_user_is_refused(auth: AccessAuth, issuer: AccessIssuer, store: SQLiteStore) -> None:
    await auth.authenticate(request(issuer.sign(email="eve@example.com")))
    await store.set_disabled("eve@example.com", True)
    assert "disabled" in await refused(auth, issuer.sign(email="eve@example.com"))


# -- refused: the signature ----------------------------------------------------------------------


async def test_a_kid_never_published_is_refused_after_one_refetch(
    auth: AccessAuth, issuer: AccessIssuer
) -> None:
    assert "unknown signing key" in await refused(auth, issuer.sign(kid="f" * 64))
    # the first fetch found no such kid, and the one refetch it allows did not either
    assert issuer.fetches == 2


async def test_a_forgery_under_a_published_kid_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issuer.sign(key=other, kid=issuer.current.kid, email="admin@example.com")
    assert "bad signature" in await refused(auth, forged)


async def test_alg_none_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": issuer.current.kid}, issuer.claims()) + "."
    assert "not signed with RS256" in await refused(auth, token)
    assert issuer.fetches == 0


async def test_hs256_keyed_with_the_public_key_is_refused(auth: AccessAuth, issuer: AccessIssuer) -> None:
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": issuer.current.kid}, issuer.claims())
    mac = hmac.new(issuer.current.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    assert "not signed with RS256" in await refused(auth, signing_input + "." + b64(mac))


async def test_a_valid_signature_with_a_tampered_payload_is_refused(
    auth: AccessAuth, issuer: AccessIssuer
) -> None:
    header, _, signature = issuer.sign().split(".")
    tampered = (
        header + "." + b64(json.dumps(issuer.claims(email="admin@example.com")).encode()) + "." + signature
    )
    assert "bad signature" in await refused(auth, tampered)


# -- keys: rotation, refresh, throttle, outage ---------------------------------------------------


async def test_a_rotated_key_is_fetched_once_and_the_previous_stays_valid(
    auth: AccessAuth, issuer: AccessIssuer, clock: Clock
) -> None:
    before = issuer.sign(email="old@example.com")
    await auth.authenticate(request(before))
    assert issuer.fetches == 1
    issuer.rotate()
    for n in range(3):
        await auth.authenticate(request(issuer.sign(email=f"new{n}@example.com")))
    assert issuer.fetches == 2
    await auth.authenticate(request(before))
    assert issuer.fetches == 2
    # Once the previous key is gone from the set and the set is an hour old, its tokens fail.
    issuer.drop_oldest()
    clock.advance(3600)
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 3
    assert "unknown signing key" in await refused(auth, before)
    assert issuer.fetches == 4


async def test_concurrent_requests_with_a_new_kid_share_one_refetch(
    auth: AccessAuth, issuer: AccessIssuer
) -> None:
    await auth.authenticate(request(issuer.sign()))
    issuer.rotate()
    tokens = [issuer.sign(email=f"user{n}@example.com") for n in range(8)]
    users = await asyncio.gather(*(auth.authenticate(request(token)) for token in tokens))
    assert len({user.id for user in users}) == 8
    assert issuer.fetches == 2


async def test_unknown_kids_cause_at_most_one_refetch_per_interval(
    auth: AccessAuth, issuer: AccessIssuer, clock: Clock
) -> None:
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 1
    await refused(auth, issuer.sign(kid="a" * 64))
    assert issuer.fetches == 2
    clock.advance(9.5)
    for kid in ("b", "c", "d"):
        await refused(auth, issuer.sign(kid=kid * 64))
    assert issuer.fetches == 2
    clock.advance(0.5)
    await refused(auth, issuer.sign(kid="e" * 64))
    assert issuer.fetches == 3


async def test_a_rotation_during_the_throttle_is_picked_up_when_it_ends(
    auth: AccessAuth, issuer: AccessIssuer, clock: Clock
) -> None:
    await auth.authenticate(request(issuer.sign()))
    await refused(auth, issuer.sign(kid="a" * 64))
    issuer.rotate()
    assert "unknown signing key" in await refused(auth, issuer.sign())
    clock.advance(10)
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 3


async def test_the_key_set_is_refreshed_when_an_hour_old(
    auth: AccessAuth, issuer: AccessIssuer, clock: Clock
) -> None:
    await auth.authenticate(request(issuer.sign()))
    clock.advance(3599)
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 1
    clock.advance(1)
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 2


async def test_an_unreachable_key_server_is_503_naming_the_setting(store: SQLiteStore, clock: Clock) -> None:
    issuer = AccessIssuer(audience=AUD, clock=clock)
    team = f"http://someone:hunter2secret@127.0.0.1:{free_port()}"
    auth = AccessAuth(team_domain=team, audience=AUD, users=store, clock=clock)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await auth.authenticate(request(issuer.sign(iss=team)))
    finally:
        await auth.aclose()
    assert caught.value.status == 503
    assert caught.value.field == "PARLEY_ACCESS_TEAM_DOMAIN"
    assert "hunter2secret" not in caught.value.message and "someone" not in caught.value.message


async def test_a_failing_key_server_is_503(auth: AccessAuth, issuer: AccessIssuer, clock: Clock) -> None:
    issuer.failing = True
    with pytest.raises(ProviderUnavailable) as caught:
        await auth.authenticate(request(issuer.sign()))
    assert "HTTP 503" in caught.value.message
    # still 503 (not "unknown key") while there are no keys, and retried after a short pause
    with pytest.raises(ProviderUnavailable):
        await auth.authenticate(request(issuer.sign()))
    issuer.failing = False
    clock.advance(10)
    await auth.authenticate(request(issuer.sign()))


async def test_cached_keys_outlive_a_key_server_outage(
    auth: AccessAuth, issuer: AccessIssuer, clock: Clock
) -> None:
    await auth.authenticate(request(issuer.sign()))
    issuer.failing = True
    clock.advance(3600)
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 2
    # the failed refresh is retried after a pause, not on every request
    await auth.authenticate(request(issuer.sign()))
    assert issuer.fetches == 2


# -- settings ------------------------------------------------------------------------------------


async def test_from_settings(tmp_path: Path, store: SQLiteStore) -> None:
    settings = make_settings(
        tmp_path, access_team_domain="https://team.cloudflareaccess.com/", access_aud=AUD
    )
    auth = AccessAuth.from_settings(settings, store)
    try:
        assert auth.team_domain == "https://team.cloudflareaccess.com"
        assert auth.certs_url == "https://team.cloudflareaccess.com/cdn-cgi/access/certs"
        assert auth.audience == AUD and auth.mode == "cloudflare-access"
    finally:
        await auth.aclose()


@pytest.mark.parametrize(
    ("domain", "aud", "field"),
    [
        (None, AUD, "PARLEY_ACCESS_TEAM_DOMAIN"),
        ("team.cloudflareaccess.com", AUD, "PARLEY_ACCESS_TEAM_DOMAIN"),
        ("ftp://team.cloudflareaccess.com", AUD, "PARLEY_ACCESS_TEAM_DOMAIN"),
        ("https://", AUD, "PARLEY_ACCESS_TEAM_DOMAIN"),
        ("https://team.cloudflareaccess.com", None, "PARLEY_ACCESS_AUD"),
        ("https://team.cloudflareaccess.com", " ", "PARLEY_ACCESS_AUD"),
    ],
)
def test_from_settings_names_the_missing_or_wrong_setting(
    tmp_path: Path, store: SQLiteStore, domain: str | None, aud: str | None, field: str
) -> None:
    settings = make_settings(tmp_path, access_team_domain=domain, access_aud=aud)
    with pytest.raises(ConfigError) as caught:
        AccessAuth.from_settings(settings, store)
    assert caught.value.field == field
