"""TrustedHeaderAuth on requests built from ASGI scopes, with a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import Request

from parley.auth.trusted import TrustedHeaderAuth
from parley.errors import ConfigError, Unauthenticated
from parley.store.sqlite import SQLiteStore
from tests.conftest import make_settings

HEADER = "X-Forwarded-Email"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture
def auth(store: SQLiteStore) -> TrustedHeaderAuth:
    return TrustedHeaderAuth(header=HEADER, proxies=["127.0.0.2/32", "10.0.0.0/8", "fd00::/8"], users=store)


def request(
    *values: str, client: tuple[str, int] | None = ("127.0.0.2", 5000), header: str = HEADER
) -> Request:
    headers = [(header.lower().encode(), value.encode("latin-1")) for value in values]
    headers.append((b"host", b"parley.example"))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": client})


async def refused(auth: TrustedHeaderAuth, connection: Request) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(connection)
    assert caught.value.status == 401
    return caught.value.message


async def test_the_proxys_header_names_the_user_made_on_first_sight(
    auth: TrustedHeaderAuth, store: SQLiteStore
) -> None:
    first = await auth.authenticate(request("ada@example.com"))
    second = await auth.authenticate(request("ada@example.com", client=("10.1.2.3", 40000)))
    assert first.name == "ada@example.com" and not first.admin
    assert second == first
    assert [user.name for user in await store.list_users()].count("ada@example.com") == 1


async def test_the_header_name_is_case_insensitive(auth: TrustedHeaderAuth) -> None:
    assert (await auth.authenticate(request("ada@example.com", header="x-forwarded-EMAIL"))).name == (
        "ada@example.com"
    )


@pytest.mark.parametrize(
    "client",
    [("127.0.0.1", 5000), ("11.0.0.1", 5000), ("::1", 5000), ("fe80::1", 5000), ("testclient", 50000)],
)
async def test_the_header_from_a_peer_outside_the_proxies_is_refused(
    auth: TrustedHeaderAuth, store: SQLiteStore, client: tuple[str, int]
) -> None:
    message = await refused(auth, request("admin@example.com", client=client))
    assert "accepted only from PARLEY_TRUSTED_PROXIES" in message
    assert await store.list_users() == []


async def test_a_request_without_a_peer_address_is_refused(auth: TrustedHeaderAuth) -> None:
    assert "PARLEY_TRUSTED_PROXIES" in await refused(auth, request("ada@example.com", client=None))


async def test_the_header_twice_is_refused(auth: TrustedHeaderAuth, store: SQLiteStore) -> None:
    assert "more than one" in await refused(auth, request("ada@example.com", "admin@example.com"))
    assert await store.list_users() == []


async def test_a_missing_header_is_refused(auth: TrustedHeaderAuth) -> None:
    assert "no X-Forwarded-Email header" in await refused(auth, request())


@pytest.mark.parametrize(
    "value", ["", "   ", "two words", "-leading-dash", "a/b", "x" * 255, "ada@exämple.com"]
)
async def test_a_value_that_is_no_user_name_is_refused(
    auth: TrustedHeaderAuth, store: SQLiteStore, value: str
) -> None:
    message = await refused(auth, request(value))
    assert "X-Forwarded-Email must be" in message
    assert await store.list_users() == []


@pytest.mark.parametrize(
    ("client", "accepted"),
    [("::ffff:10.0.0.1", True), ("::ffff:127.0.0.2", True), ("::ffff:11.0.0.1", False), ("fd12::5", True)],
)
async def test_ipv4_mapped_peers_compare_as_their_ipv4_address(
    auth: TrustedHeaderAuth, client: str, accepted: bool
) -> None:
    connection = request("ada@example.com", client=(client, 5000))
    if accepted:
        assert (await auth.authenticate(connection)).name == "ada@example.com"
    else:
        await refused(auth, connection)


async def test_an_ipv4_mapped_proxy_network_matches_ipv4_peers(store: SQLiteStore) -> None:
    auth = TrustedHeaderAuth(header=HEADER, proxies=["::ffff:10.0.0.0/104"], users=store)
    assert (
        await auth.authenticate(request("ada@example.com", client=("10.9.9.9", 1)))
    ).name == "ada@example.com"
    assert (await auth.authenticate(request("ada@example.com", client=("::ffff:10.9.9.9", 1)))).name == (
        "ada@example.com"
    )
    await refused(auth, request("ada@example.com", client=("11.0.0.1", 1)))


async def test_a_disabled_user_is_refused(auth: TrustedHeaderAuth, store: SQLiteStore) -> None:
    await auth.authenticate(request("eve@example.com"))
    await store.set_disabled("eve@example.com", True)
    assert "disabled" in await refused(auth, request("eve@example.com"))


def test_from_settings(tmp_path: Path, store: SQLiteStore) -> None:
    settings = make_settings(tmp_path, trusted_header=HEADER, trusted_proxies="10.0.0.0/8, ::1")
    auth = TrustedHeaderAuth.from_settings(settings, store)
    assert auth.mode == "trusted-header" and auth.header == HEADER
    assert [str(network) for network in auth.networks] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("header", "proxies", "field"),
    [
        (HEADER, "", "PARLEY_TRUSTED_PROXIES"),
        (None, "10.0.0.0/8", "PARLEY_TRUSTED_HEADER"),
        (" ", "10.0.0.0/8", "PARLEY_TRUSTED_HEADER"),
    ],
)
def test_from_settings_refuses_to_start_without_the_proxies_or_the_header(
    tmp_path: Path, store: SQLiteStore, header: str | None, proxies: str, field: str
) -> None:
    settings = make_settings(tmp_path, trusted_header=header, trusted_proxies=proxies)
    with pytest.raises(ConfigError) as caught:
        TrustedHeaderAuth.from_settings(settings, store)
    assert caught.value.field == field
    if field == "PARLEY_TRUSTED_PROXIES":
        assert "refuses to start without it" in caught.value.message
