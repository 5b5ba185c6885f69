"""PARLEY_AUTH=trusted-header: a reverse proxy authenticates and names the user in a header.

The header is believed only from peers inside PARLEY_TRUSTED_PROXIES, and the mode refuses to start
without that list: otherwise anyone who reaches the port directly, or whose own copy of the header
the proxy forwards, could be anyone. A header sent twice is refused for the same reason (a proxy
that appends rather than replaces would pass the client's copy along with its own).
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from starlette.requests import HTTPConnection

from parley.auth.base import Authenticator
from parley.auth.cache import UserCache
from parley.config import Settings
from parley.errors import ConfigError, InvalidInput, Unauthenticated
from parley.store.users import User, UserStore, check_user_name

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


class TrustedHeaderAuth(Authenticator):
    mode = "trusted-header"

    def __init__(
        self, *, header: str, proxies: list[str], users: UserStore, cache: UserCache | None = None
    ) -> None:
        self.cache = cache if cache is not None else UserCache(0)
        if not header.strip():
            raise ConfigError(
                "PARLEY_AUTH=trusted-header needs PARLEY_TRUSTED_HEADER", field="PARLEY_TRUSTED_HEADER"
            )
        if not proxies:
            raise ConfigError(
                "PARLEY_AUTH=trusted-header needs PARLEY_TRUSTED_PROXIES (the proxies' CIDRs): "
                "the mode refuses to start without it",
                field="PARLEY_TRUSTED_PROXIES",
            )
        try:
            self.networks = [_plain_network(ipaddress.ip_network(cidr, strict=False)) for cidr in proxies]
        except ValueError as exc:
            raise ConfigError(f"PARLEY_TRUSTED_PROXIES: {exc}", field="PARLEY_TRUSTED_PROXIES") from None
        self.header = header.strip()
        self.users = users

    @classmethod
    def from_settings(
        cls, settings: Settings, users: UserStore, *, cache: UserCache | None = None
    ) -> TrustedHeaderAuth:
        return cls(
            header=settings.trusted_header or "",
            proxies=list(settings.trusted_proxies),
            users=users,
            cache=cache,
        )

    async def authenticate(self, connection: HTTPConnection) -> User:
        peer = _peer(connection)
        if peer is None or not any(peer in network for network in self.networks):
            raise Unauthenticated(
                f"the {self.header} header is accepted only from PARLEY_TRUSTED_PROXIES, "
                "and this request did not come from one of them",
                field=self.header,
            )
        values = connection.headers.getlist(self.header)
        if not values:
            raise Unauthenticated(f"the proxy sent no {self.header} header", field=self.header)
        if len(values) > 1:
            raise Unauthenticated(f"more than one {self.header} header", field=self.header)
        # emails are case-insensitive: Alice@Example.com and alice@example.com are one user
        name = values[0].strip().lower()
        try:
            check_user_name(name, self.header)
        except InvalidInput as exc:
            raise Unauthenticated(exc.message, field=self.header) from None
        user = self.cache.get(name)
        if user is None:
            user = await self.users.identified_user(name)
            if user.disabled:
                raise Unauthenticated("this user is disabled")
            self.cache.put(name, user)
        return user


def _peer(connection: HTTPConnection) -> Address | None:
    """The peer's address, an IPv4-mapped IPv6 one as plain IPv4; None without one (a Unix socket)."""
    if connection.client is None:
        return None
    try:
        address = ipaddress.ip_address(connection.client.host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _plain_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) as the IPv4 one, to match `_peer`'s addresses."""
    if isinstance(network, IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, network.prefixlen - 96))
    return network
