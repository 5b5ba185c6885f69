"""CloudflareRealtimeClient: the Cloudflare Realtime SFU HTTP API, one method per endpoint.

Three things make this more than a thin wrapper:

- **One SDP state machine per session.** The SFU answers a concurrent change with HTTP 406, and
  a pull's offer must be answered (PUT renegotiate) before the next change. So every mutation of a
  session waits its turn in a FIFO (an `asyncio.Lock` per session id; asyncio locks wake waiters
  in order and do not let newcomers barge). Reads and different sessions never wait. A lock exists
  only while a mutation of its session runs or waits, so finished sessions leave nothing behind.
- **HTTP 200 is not success.** A reply can carry a top-level `errorCode`, and each item of
  `tracks` / `dataChannels` its own; both become exceptions (`TrackError` keeps the whole reply).
- **Retries only where they cannot repeat a change.** Failures the SFU documents as retryable,
  406, 429, 5xx and connection failures are retried with exponential backoff and jitter; a session
  that is not connected yet (425) is polled for up to `not_connected_wait` seconds. A mutation
  whose answer never came (read timeout, broken connection) is not retried: the SFU may have
  applied it, and a second `tracks/new` would publish the tracks twice.

The app secret lives only in the HTTP client's default headers (masked in httpx reprs), is scrubbed
from every message built from upstream text, and is never logged; neither are SDP bodies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from parley.rtc.cloudflare.errors import (
    APP_ID_VAR,
    APP_SECRET_VAR,
    RealtimeError,
    RealtimeInvalidRequest,
    RealtimeNotConfigured,
    RealtimePayloadTooLarge,
    RealtimeTimeout,
    RealtimeUnavailable,
    SessionGone,
    SessionNotConnected,
    SessionNotFound,
    check_datachannels,
    check_tracks,
    clip,
)
from parley.rtc.cloudflare.models import (
    CloseTracksRequest,
    DataChannel,
    DataChannelsReply,
    DataChannelsRequest,
    NewSessionReply,
    NewSessionRequest,
    RenegotiateRequest,
    SessionDescription,
    SessionState,
    Track,
    TracksReply,
    TracksRequest,
)

log = logging.getLogger("parley.rtc.cloudflare")

DEFAULT_BASE_URL = "https://rtc.live.cloudflare.com/v1"
#: the API refuses more tracks than this in one call
MAX_TRACKS_PER_CALL = 64
#: the longest pause between two attempts, whatever `backoff` or a Retry-After header say
MAX_BACKOFF = 5.0
#: the longest pause between two polls of a session whose peer connection is not connected yet
MAX_NOT_CONNECTED_STEP = 0.5
#: without a floor, `backoff=0` would poll a 425 session as fast as the loop runs
MIN_NOT_CONNECTED_STEP = 0.01

#: codes the API documents as "try again"
RETRYABLE_CODES = frozenset(
    {
        "retryable_transient_error",
        "temporarily_unavailable_error",
        "transport_unavailable_error",
        "backend_error",
        "internal_error",
    }
)
#: 406 is a concurrent change made elsewhere: the SFU did nothing, so trying again is safe
RETRYABLE_STATUSES = frozenset({406, 429, 500, 502, 503, 504})
INVALID_REQUEST_CODES = frozenset({"decoding_error", "invalid_params", "invalid_session_description"})

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(slots=True)
class _SessionQueue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: callers holding or waiting for the lock; at 0 the queue is dropped
    users: int = 0


@dataclass(slots=True)
class _Retry:
    """An attempt failed in a way that may succeed if tried again; `error` is raised when out of tries."""

    error: RealtimeError
    cause: BaseException | None = None
    #: the server's Retry-After, in seconds
    after: float | None = None
    #: 425: polled against `not_connected_wait` instead of counting against `retries`
    not_connected: bool = False


class CloudflareRealtimeClient:
    """Calls the SFU API of one Realtime app; safe to share between every call of a server.

    An empty `app_id` or `app_secret` does not stop construction; each call then raises
    `RealtimeNotConfigured` naming the variable to set.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        not_connected_wait: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app_id = app_id
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.not_connected_wait = not_connected_wait
        self._secret = app_secret
        self._app_path = f"/apps/{quote(app_id, safe='')}"
        self._queues: dict[str, _SessionQueue] = {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {app_secret}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"CloudflareRealtimeClient(app_id={self.app_id!r}, base_url={self.base_url!r})"

    @property
    def busy_sessions(self) -> int:
        """Sessions with a mutation running or waiting; 0 once every call has returned."""
        return len(self._queues)

    # -- sessions --------------------------------------------------------------------------------

    async def new_session(
        self,
        *,
        offer: SessionDescription | None = None,
        correlation_id: str | None = None,
        thirdparty: bool = False,
    ) -> NewSessionReply:
        """A new SFU session (201). `thirdparty` is for an ICE-lite peer; `correlation_id` is a label.

        With `offer` (the older form) the reply carries the SFU's answer.
        """
        params: dict[str, str] = {}
        if thirdparty:
            params["thirdparty"] = "true"
        if correlation_id is not None:
            params["correlationId"] = correlation_id
        _expect(offer, "offer")
        body = NewSessionRequest(sessionDescription=offer).wire() if offer is not None else None
        data = await self._request("POST", f"{self._app_path}/sessions/new", body=body, params=params)
        return _parse(NewSessionReply, data, "sessions/new")

    async def get_session(self, session_id: str) -> SessionState:
        """The session's tracks (with `status`) and data channels. Not queued behind mutations."""
        data = await self._session_request(session_id, "GET", "")
        return _parse(SessionState, data, "GET session")

    def forget(self, session_id: str) -> None:
        """Drop the queue of a session we are done with.

        Queues are dropped after their last use anyway; this is for a session abandoned while
        calls were still queued (those finish in the old queue, new calls start a fresh one).
        """
        self._queues.pop(session_id, None)

    # -- tracks ----------------------------------------------------------------------------------

    async def new_tracks(
        self,
        session_id: str,
        tracks: Sequence[Track],
        *,
        offer: SessionDescription | None = None,
        auto_discover: bool | None = None,
    ) -> TracksReply:
        """Publish (`location="local"`, with `offer`) or pull (`"remote"`) tracks.

        When the reply has `requiresImmediateRenegotiation`, answer its offer with `renegotiate`
        before anything else changes the session. Raises `TrackError` if any track failed.
        """
        _expect(offer, "offer")
        request = TracksRequest(
            tracks=_track_batch(tracks), sessionDescription=offer, autoDiscover=auto_discover
        )
        data = await self._mutate(session_id, "POST", "/tracks/new", request.wire())
        return check_tracks(_parse(TracksReply, data, "tracks/new"), "tracks/new")

    async def renegotiate(self, session_id: str, answer: SessionDescription) -> None:
        """Send the answer to an offer the SFU made (after a pull or a non-forced close)."""
        _expect(answer, "answer")
        request = RenegotiateRequest(sessionDescription=answer)
        await self._mutate(session_id, "PUT", "/renegotiate", request.wire())

    async def close_tracks(
        self,
        session_id: str,
        mids: Sequence[str],
        *,
        force: bool,
        offer: SessionDescription | None = None,
    ) -> TracksReply:
        """Close tracks by mid. `force=True` closes at once without SDP; else the reply has an answer."""
        if not mids:
            raise RealtimeInvalidRequest("tracks/close needs at least one mid", field="mids", limit=1)
        _expect(offer, "offer")
        request = CloseTracksRequest(
            tracks=_track_batch([Track(mid=mid) for mid in mids]), force=force, sessionDescription=offer
        )
        data = await self._mutate(session_id, "PUT", "/tracks/close", request.wire())
        return check_tracks(_parse(TracksReply, data, "tracks/close"), "tracks/close")

    async def update_tracks(
        self, session_id: str, tracks: Sequence[Track], *, offer: SessionDescription | None = None
    ) -> TracksReply:
        """Change tracks already in the session (each named by `mid`). Raises `TrackError` per item."""
        _expect(offer, "offer")
        request = TracksRequest(tracks=_track_batch(tracks), sessionDescription=offer)
        data = await self._mutate(session_id, "PUT", "/tracks/update", request.wire())
        return check_tracks(_parse(TracksReply, data, "tracks/update"), "tracks/update")

    # -- data channels ---------------------------------------------------------------------------

    async def new_datachannels(self, session_id: str, channels: Sequence[DataChannel]) -> DataChannelsReply:
        """Open data channels; open each on the peer with `negotiated=True` and the returned `id`."""
        request = DataChannelsRequest(dataChannels=list(channels))
        data = await self._mutate(session_id, "POST", "/datachannels/new", request.wire())
        return check_datachannels(_parse(DataChannelsReply, data, "datachannels/new"), "datachannels/new")

    async def close_datachannels(self, session_id: str, ids: Sequence[int]) -> None:
        request = DataChannelsRequest(dataChannels=[DataChannel(id=i) for i in ids])
        data = await self._mutate(session_id, "PUT", "/datachannels/close", request.wire())
        # the reply's shape is not documented: check items only if it has them
        if isinstance(data, dict) and data.get("dataChannels"):
            check_datachannels(_parse(DataChannelsReply, data, "datachannels/close"), "datachannels/close")

    # -- plumbing --------------------------------------------------------------------------------

    async def _mutate(self, session_id: str, method: str, action: str, body: dict[str, Any]) -> Any:
        async with self._serialised(session_id):
            return await self._session_request(session_id, method, action, body)

    @asynccontextmanager
    async def _serialised(self, session_id: str) -> AsyncIterator[None]:
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = _SessionQueue()
        queue.users += 1
        try:
            async with queue.lock:
                yield
        finally:
            queue.users -= 1
            # `is queue`: after forget() a newer queue for the same id may exist; leave it alone
            if queue.users == 0 and self._queues.get(session_id) is queue:
                del self._queues[session_id]

    async def _session_request(
        self, session_id: str, method: str, action: str, body: dict[str, Any] | None = None
    ) -> Any:
        path = f"{self._app_path}/sessions/{quote(session_id, safe='')}{action}"
        try:
            return await self._request(method, path, body=body)
        except SessionGone:
            # nothing can change in a closed session any more, so its queue has no future use
            self.forget(session_id)
            raise

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """One API call with its retries; the reply's JSON (`{}` for an empty body)."""
        self._check_configured()
        attempt = 0
        polls = 0
        not_connected_since: float | None = None
        while True:
            outcome = await self._attempt(method, path, body, params)
            if not isinstance(outcome, _Retry):
                return outcome
            if outcome.not_connected:
                now = time.monotonic()
                if not_connected_since is None:
                    not_connected_since = now
                remaining = self.not_connected_wait - (now - not_connected_since)
                if remaining <= 0:
                    raise outcome.error from outcome.cause
                step = min(self.backoff * 2.0**polls, MAX_NOT_CONNECTED_STEP, remaining)
                await asyncio.sleep(max(step, MIN_NOT_CONNECTED_STEP))
                polls += 1
                continue
            if attempt >= self.retries:
                raise outcome.error from outcome.cause
            await asyncio.sleep(self._delay(attempt, outcome.after))
            attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.backoff * 2.0**attempt, MAX_BACKOFF)
        # "equal jitter": the pause still doubles, but clients that failed together spread apart
        delay = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_BACKOFF))
        return delay

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, params: dict[str, str] | None
    ) -> Any:
        """The reply's JSON, a `_Retry`, or a raised error that no retry can fix."""
        started = time.perf_counter()
        try:
            # httpx appends the path to the base URL's own path (/v1), slash or not
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            log.debug("%s %s -> %s in %.0f ms", method, path, type(exc).__name__, _ms(started))
            return self._transport_failure(method, path, exc)
        log.debug("%s %s -> %s in %.0f ms", method, path, response.status_code, _ms(started))
        return self._answer(method, path, response)

    def _transport_failure(self, method: str, path: str, exc: httpx.TransportError) -> _Retry:
        what = f"{method} {self._endpoint(path)}"
        detail = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            # the request never left this process, so trying again cannot repeat a change
            error: RealtimeError = RealtimeUnavailable(
                f"Cannot reach Cloudflare Realtime at {self.base_url} for {what}: {detail}"
            )
            return _Retry(error, cause=exc)
        unknown = "" if method == "GET" else "; the SFU may or may not have applied it"
        if isinstance(exc, httpx.TimeoutException):
            error = RealtimeTimeout(
                f"Cloudflare Realtime did not answer {what} within {self.timeout:g} s{unknown}"
            )
        else:
            error = RealtimeUnavailable(f"The connection to Cloudflare Realtime broke during {what}{unknown}")
        if method == "GET":
            return _Retry(error, cause=exc)
        raise error from exc

    def _answer(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = None
        code: str | None = None
        description = ""
        if isinstance(data, dict):
            raw_code = data.get("errorCode")
            code = None if raw_code is None else str(raw_code)
            description = str(data.get("errorDescription") or "")
        elif response.content:
            description = response.text  # a proxy's HTML page, say: still worth a glance
        if response.is_success and code is None:
            if data is None and response.content:
                raise RealtimeError(
                    f"Cloudflare Realtime answered {method} {self._endpoint(path)} with a body that "
                    f"is not JSON: {self._excerpt(description)}",
                    http_status=status,
                )
            return {} if data is None else data
        retry_after = _seconds(response.headers.get("retry-after"))
        return self._failure(method, path, status, code, self._excerpt(description), retry_after)

    def _failure(
        self, method: str, path: str, status: int, code: str | None, description: str, after: float | None
    ) -> _Retry:
        """Map a failed answer to a `_Retry` or raise the error it means (status first, then code)."""
        what = f"{method} {self._endpoint(path)}"
        said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {description}" if description else "")
        context: dict[str, Any] = {
            "error_code": code,
            "http_status": status,
            "details": {
                "upstream_status": status,
                "error_code": code,
                "upstream_message": description or None,
            },
        }
        if status == 410:
            raise SessionGone(
                f"Cloudflare Realtime closed the session ({what}: {said}); make a new session and "
                "rebuild its tracks",
                **context,
            )
        if status == 425:
            error: RealtimeError = SessionNotConnected(
                f"The session's peer connection was still not connected after "
                f"{self.not_connected_wait:g} s ({what}: {said})",
                **context,
            )
            return _Retry(error, not_connected=True)
        if status in (401, 403) or code == "unauthorized":
            raise RealtimeNotConfigured(
                f"Cloudflare Realtime rejected the app credentials ({said}); set {APP_ID_VAR} and "
                f"{APP_SECRET_VAR} to the id and secret of a Realtime SFU app",
                field=APP_SECRET_VAR,
                **context,
            )
        if status in RETRYABLE_STATUSES or code in RETRYABLE_CODES:
            if status == 406:
                message = (
                    f"Cloudflare Realtime kept refusing {what}: another change to the session was "
                    f"in progress ({said})"
                )
            else:
                message = f"Cloudflare Realtime is unavailable ({what}: {said})"
            return _Retry(RealtimeUnavailable(message, **context), after=after)
        if status == 404 and path.endswith("/sessions/new"):
            raise RealtimeNotConfigured(
                f"Cloudflare Realtime has no app with this id ({said}); set {APP_ID_VAR} to the id "
                "of a Realtime SFU app",
                field=APP_ID_VAR,
                **context,
            )
        if status == 404 or code == "not_found":
            raise SessionNotFound(
                f"Cloudflare Realtime does not know the session ({what}: {said})", **context
            )
        if status == 413 or code == "payload_too_large":
            raise RealtimePayloadTooLarge(
                f"Cloudflare Realtime refused {what} as too large ({said})", **context
            )
        if status == 400 or code in INVALID_REQUEST_CODES:
            raise RealtimeInvalidRequest(f"Cloudflare Realtime refused {what} ({said})", **context)
        if status >= 500:
            raise RealtimeUnavailable(f"Cloudflare Realtime failed {what} ({said})", **context)
        raise RealtimeError(f"Cloudflare Realtime refused {what} ({said})", **context)

    def _check_configured(self) -> None:
        missing = [
            name for name, value in ((APP_ID_VAR, self.app_id), (APP_SECRET_VAR, self._secret)) if not value
        ]
        if missing:
            raise RealtimeNotConfigured(
                f"Cloudflare Realtime needs {' and '.join(missing)}; create a Realtime SFU app in the "
                "Cloudflare dashboard and set its id and secret",
                field=missing[-1],
            )

    def _endpoint(self, path: str) -> str:
        """`sessions/<id>/tracks/new` rather than the whole path: the app id adds nothing to a message."""
        return path.removeprefix(self._app_path).lstrip("/") or path

    def _excerpt(self, text: str) -> str:
        return clip(self._scrub(text))

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CloudflareRealtimeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _expect(description: SessionDescription | None, kind: Literal["offer", "answer"]) -> None:
    # a swapped offer/answer would only come back from the SFU as an opaque SDP error
    if description is not None and description.type != kind:
        raise RealtimeInvalidRequest(
            f"expected an SDP {kind}, got an {description.type}", field="sessionDescription"
        )


def _track_batch(tracks: Sequence[Track]) -> list[Track]:
    if len(tracks) > MAX_TRACKS_PER_CALL:
        raise RealtimeInvalidRequest(
            f"Cloudflare Realtime takes at most {MAX_TRACKS_PER_CALL} tracks per call, got {len(tracks)}",
            field="tracks",
            limit=MAX_TRACKS_PER_CALL,
        )
    return list(tracks)


def _parse(model: type[_Model], data: Any, what: str) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # the error's own text would quote the reply, SDP included
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise RealtimeError(
            f"Cloudflare Realtime answered {what} with an unexpected reply: {where}: {first['msg']}"
        ) from exc


def _seconds(value: str | None) -> float | None:
    """A Retry-After given in seconds; the HTTP-date form is rare enough to ignore."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
