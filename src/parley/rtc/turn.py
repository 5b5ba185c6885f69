"""CloudflareTURN: short-lived TURN credentials from Cloudflare's TURN key API, one set per call.

The TURN key's API token is a long-term secret that mints unlimited credentials, so it never
leaves the server: it lives only in the client's default headers (which httpx masks in reprs) and
is scrubbed from every message built here. What browsers get is a generated username/credential
pair that expires after the TTL.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from parley.errors import (
    ConfigError,
    ParleyError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from parley.rtc.ice import IceServer, parse_ice_servers, udp_first

if TYPE_CHECKING:
    from parley.config import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://rtc.live.cloudflare.com/v1"
KEY_VAR = "CLOUDFLARE_TURN_KEY_ID"
TOKEN_VAR = "CLOUDFLARE_TURN_KEY_API_TOKEN"
#: signalling waits on this call, so it gets far less time than a model call
DEFAULT_TIMEOUT = 5.0


class CloudflareTURN:
    """Generates ICE servers (Cloudflare STUN + TURN with fresh credentials) on every call.

    Missing variables do not stop construction; each call then says which one to set.
    """

    def __init__(
        self,
        *,
        key_id: str | None,
        api_token: str | None,
        ttl_seconds: int = 600,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.key_id = key_id or None
        self.ttl_seconds = ttl_seconds
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token = api_token or ""
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout), transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudflareTURN | None:
        """The client, or None when neither TURN variable is set (TURN is then simply off)."""
        token = settings.cloudflare_turn_key_api_token
        if not settings.cloudflare_turn_key_id and token is None:
            return None
        return cls(
            key_id=settings.cloudflare_turn_key_id,
            api_token=token.get_secret_value() if token is not None else None,
            ttl_seconds=settings.turn_ttl_seconds,
            base_url=settings.realtime_base_url,
        )

    @property
    def missing(self) -> list[str]:
        names = [] if self.key_id else [KEY_VAR]
        return names if self._token else [*names, TOKEN_VAR]

    async def ice_servers(self, ttl_seconds: int | None = None) -> tuple[IceServer, ...]:
        """Fresh STUN/TURN servers, port-53 URLs dropped and UDP first (for aiortc).

        Uses `generate-ice-servers`; a key API that answers it with 404 is asked the older
        `generate` endpoint, whose `iceServers` is one object instead of a list.
        """
        base = self._credentials_path()
        body = {"ttl": ttl_seconds or self.ttl_seconds}
        response = await self._post(f"{base}/generate-ice-servers", body)
        if response.status_code == 404:
            response = await self._post(f"{base}/generate", body)
        if response.status_code not in (200, 201):
            raise self._response_error(response)
        return self._parse(response)

    async def revoke(self, username: str) -> None:
        """Revoke credentials generated earlier (by their username) before their TTL runs out."""
        path = f"{self._credentials_path()}/{quote(username, safe='')}/revoke"
        response = await self._post(path, None)
        if response.is_error:
            raise self._response_error(response)

    def _credentials_path(self) -> str:
        if self.missing or self.key_id is None:
            raise ProviderNotConfigured(
                f"Cloudflare TURN needs {' and '.join(self.missing)}; create a TURN key in the "
                "Cloudflare dashboard (Realtime > TURN) and set its id and API token",
                field=self.missing[0],
            )
        return f"/turn/keys/{quote(self.key_id, safe='')}/credentials"

    async def _post(self, path: str, body: Any) -> httpx.Response:
        try:
            return await self._http.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"The Cloudflare TURN API did not answer within {self.timeout:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"Cannot reach the Cloudflare TURN API at {self.base_url}: {self._scrub(str(exc))}"
            ) from exc

    def _parse(self, response: httpx.Response) -> tuple[IceServer, ...]:
        try:
            raw = response.json().get("iceServers")
        except (ValueError, AttributeError):
            raw = None
        entries = [raw] if isinstance(raw, dict) else raw
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ProviderError("The Cloudflare TURN API answered without an iceServers list")
        try:
            servers = udp_first(parse_ice_servers(entries, setting="iceServers"))
        except ConfigError as exc:
            raise ProviderError(f"The Cloudflare TURN API answered unusable ICE servers: {exc}") from exc
        if not servers:
            raise ProviderError("The Cloudflare TURN API answered no ICE server a browser can use")
        return servers

    def _response_error(self, response: httpx.Response) -> ParleyError:
        status = response.status_code
        message = self._scrub(response.text[:300].strip())
        details = {"upstream_status": status, "upstream_message": message or None}
        log.debug("Cloudflare TURN API answered HTTP %s", status)
        if status in (401, 403):
            return ProviderNotConfigured(
                f"Cloudflare rejected the TURN key API token; set {TOKEN_VAR} to the API token "
                f"shown when the TURN key in {KEY_VAR} was created",
                field=TOKEN_VAR,
                details=details,
            )
        if status == 404:
            return ProviderNotConfigured(
                f"Cloudflare has no TURN key with this id; set {KEY_VAR} to a TURN key id from the "
                "Cloudflare dashboard",
                field=KEY_VAR,
                details=details,
            )
        if status == 429:
            return ProviderRateLimited("The Cloudflare TURN API rate limit was hit", details=details)
        if status in (408, 504):
            return ProviderTimeout("The Cloudflare TURN API timed out", details=details)
        if status >= 500:
            return ProviderUnavailable(f"The Cloudflare TURN API failed (HTTP {status})", details=details)
        return ProviderError(
            f"The Cloudflare TURN API answered HTTP {status}: {message or 'no message'}", details=details
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    async def aclose(self) -> None:
        await self._http.aclose()
