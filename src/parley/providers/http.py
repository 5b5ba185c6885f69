"""The HTTP client of the hosted model vendors (Workers AI, any OpenAI-compatible server).

One `UpstreamHTTP` per upstream: an aiohttp session with connection reuse, made on first use
inside the running loop. aiohttp, not httpx, because a streamed chat call is the hot path of a
turn: measured here (one process, one run, a local SSE upstream), httpx spent 3.8-5.0 ms of CPU
per streamed reply and aiohttp 0.5-1.3 ms.

Its failures are three classes of its own (timeout, connect, transport), which each vendor's
client maps into Parley's exception tree with its own wording. The credential lives only in the
session's default headers; no message raised here contains a header.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json as jsonlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

#: bytes read from the socket per chunk of a streamed body (aiohttp hands over what has arrived)
_CHUNK = 64 * 1024


class UpstreamHTTPError(Exception):
    """The request did not get an answer: a transport failure (the base class)."""


class UpstreamTimeout(UpstreamHTTPError):
    """No connection, or no bytes, within the client's timeout."""


class UpstreamConnectError(UpstreamHTTPError):
    """The upstream could not be reached (refused, unresolvable, TLS failure)."""


class UpstreamResponse:
    """An answer, read in full (`aread`) or streamed (`aiter_bytes`, `aiter_text`)."""

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        self._body: bytes | None = None

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    async def aread(self) -> bytes:
        if self._body is None:
            try:
                self._body = await self._raw.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _translate(exc) from exc
        return self._body

    @property
    def content(self) -> bytes:
        """The body `aread()` read (empty before)."""
        return self._body or b""

    @property
    def text(self) -> str:
        return self.content.decode(self._raw.charset or "utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (after `aread()`); ValueError when it is not JSON."""
        return jsonlib.loads(self.content)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw.content.iter_chunked(_CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc) from exc

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body as UTF-8 text, a character split across reads joined before it is yielded."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        async for chunk in self.aiter_bytes():
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


class UpstreamHTTP:
    """Requests to one base URL with fixed default headers; `aclose()` closes its connections."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str], timeout: float) -> None:
        url = URL(base_url.rstrip("/"))
        self._headers = dict(headers)
        if url.user is not None:
            # Credentials in the URL (a proxy or gateway in front of the vendor): HTTP basic auth,
            # unless the vendor's own Authorization header is set, which wins, as it did in httpx.
            if not any(name.lower() == "authorization" for name in self._headers):
                pair = f"{url.user}:{url.password or ''}".encode()
                self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            url = url.with_user(None)
        self.base_url = str(url)
        # Per phase, as httpx's Timeout(t) was: connecting, and each read; no bound on a whole
        # stream, which may run for as long as the model writes.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                # no cap of our own: turns queue in their sessions, not for a connection
                connector=aiohttp.TCPConnector(limit=0),
                trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as httpx honoured them
                raise_for_status=False,
            )
        return self._session

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | aiohttp.FormData | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request and hold its answer open; leaving the block closes the body."""
        try:
            raw = await self._client().request(
                method, self.base_url + path, json=json, data=data, headers=headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc) from exc
        try:
            yield UpstreamResponse(raw)
        finally:
            if raw.content.at_eof():
                raw.release()  # read to the end: the connection goes back to the pool
            else:
                raw.close()  # left mid-body (a stop, an error): the connection is dropped

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | aiohttp.FormData | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """Send a request and read its whole answer."""
        async with self.stream(method, path, json=json, data=data, headers=headers) as response:
            await response.aread()
            return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]) -> aiohttp.FormData:
    """A multipart/form-data body: plain fields, then (filename, bytes, content type) files."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, content_type) in files.items():
        form.add_field(name, content, filename=filename, content_type=content_type)
    return form


def _translate(exc: BaseException) -> UpstreamHTTPError:
    """aiohttp's failure -> ours; the message names the kind of failure, never a header."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientSSLError):
        return UpstreamConnectError(f"{type(exc).__name__}: {exc}")
    return UpstreamHTTPError(f"{type(exc).__name__}: {exc}")
