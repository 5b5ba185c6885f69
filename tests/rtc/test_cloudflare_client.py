"""CloudflareRealtimeClient against a scripted SFU API on real uvicorn.

The stand-in replays the replies each test scripts per route (the documented shapes and status
codes, and a few undocumented ones: a non-JSON 502, a top-level errorCode in a 200) and records
every request with its timing, so tests check what went over the wire: paths, bodies, the bearer
token, how many attempts were made, and whether requests of one session ever overlapped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from parley.rtc.cloudflare import (
    APP_ID_VAR,
    APP_SECRET_VAR,
    CloudflareRealtimeClient,
    DataChannel,
    DataChannelError,
    RealtimeError,
    RealtimeInvalidRequest,
    RealtimeNotConfigured,
    RealtimePayloadTooLarge,
    RealtimeTimeout,
    RealtimeUnavailable,
    SessionDescription,
    SessionGone,
    SessionNotConnected,
    SessionNotFound,
    Track,
    TrackError,
)
from parley.standins.common import pause
from parley.standins.server import BackgroundServer

APP = "app-0c1d2e"
SECRET = "RT-SECRET-93kq-do-not-leak"
OFFER = SessionDescription(type="offer", sdp="v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=client-offer\r\n")
ANSWER = SessionDescription(type="answer", sdp="v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=sfu-answer\r\n")
SFU_OFFER = {"type": "offer", "sdp": "v=0\r\no=- 5 6 IN IP4 127.0.0.1\r\ns=sfu-offer\r\n"}
BACKOFF = 0.02
RETRIES = 3


@dataclass(frozen=True)
class Reply:
    status: int = 200
    #: a dict is sent as JSON, a str as text/plain, None as an empty body
    body: Any = None
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    #: the path under /v1/apps/{APP}/
    route: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    start: float
    end: float = 0.0


@dataclass
class ScriptedSFU:
    """Replays scripted replies per (method, route) in order and records every request."""

    replies: dict[tuple[str, str], deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    seen: list[Seen] = field(default_factory=list)

    def script(self, method: str, route: str, *replies: Reply) -> None:
        self.replies[(method, route)].extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.seen.clear()

    def routes(self) -> list[str]:
        return [f"{s.method} {s.route}" for s in self.seen]

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        seen = Seen(
            method=request.method,
            route=request.url.path.removeprefix(f"/v1/apps/{APP}/"),
            query=dict(request.query_params),
            headers=dict(request.headers),
            body=await request.json() if raw else None,
            start=time.monotonic(),
        )
        self.seen.append(seen)
        queue = self.replies.get((seen.method, seen.route))
        reply = queue.popleft() if queue else Reply(418, "unscripted route")
        await pause(request, reply.delay)
        seen.end = time.monotonic()
        if isinstance(reply.body, str):
            return PlainTextResponse(reply.body, status_code=reply.status)
        if reply.body is None:
            return Response(status_code=reply.status)
        return JSONResponse(reply.body, status_code=reply.status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/{rest:path}", self.handle, methods=["GET", "POST", "PUT"])])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ScriptedSFU, BackgroundServer]]:
    sfu = ScriptedSFU()
    with BackgroundServer(sfu.app()) as running:
        yield sfu, running


@pytest.fixture
def sfu(server: tuple[ScriptedSFU, BackgroundServer]) -> ScriptedSFU:
    server[0].reset()
    return server[0]


@pytest.fixture
def base_url(server: tuple[ScriptedSFU, BackgroundServer]) -> str:
    return server[1].url + "/v1"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[CloudflareRealtimeClient]:
    async with make_client(base_url) as realtime:
        yield realtime


def make_client(base_url: str, **options: Any) -> CloudflareRealtimeClient:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "retries": RETRIES,
        "backoff": BACKOFF,
        "not_connected_wait": 0.3,
        "timeout": 2.0,
    }
    settings.update(options)
    return CloudflareRealtimeClient(APP, SECRET, **settings)


def error(code: str, description: str = "") -> dict[str, str]:
    return {"errorCode": code, "errorDescription": description or f"the SFU says {code}"}


def tracks_reply(*tracks: dict[str, Any], answer: bool = True) -> dict[str, Any]:
    reply: dict[str, Any] = {"requiresImmediateRenegotiation": False, "tracks": list(tracks)}
    if answer:
        reply["sessionDescription"] = ANSWER.model_dump()
    return reply


def starts(sfu: ScriptedSFU) -> list[float]:
    return [s.start for s in sfu.seen]


def overlapping(a: Seen, b: Seen) -> bool:
    return a.start < b.end and b.start < a.end


# -- every endpoint: method, path, body, auth, reply ----------------------------------------------


async def test_new_session_posts_no_body_with_thirdparty_and_correlation_id(
    sfu: ScriptedSFU, base_url: str
) -> None:
    sfu.script("POST", "sessions/new", Reply(201, {"sessionId": "s-1", "undocumented": [1]}))
    # a trailing slash on the base URL must not change the path
    async with make_client(base_url + "/") as realtime:
        reply = await realtime.new_session(thirdparty=True, correlation_id="call-7")
    (seen,) = sfu.seen
    assert (seen.method, seen.route, seen.body) == ("POST", "sessions/new", None)
    assert seen.query == {"thirdparty": "true", "correlationId": "call-7"}
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert reply.sessionId == "s-1" and reply.sessionDescription is None
    assert reply.model_extra == {"undocumented": [1]}  # unknown fields survive


async def test_new_session_with_an_offer_gets_an_answer(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script(
        "POST", "sessions/new", Reply(201, {"sessionId": "s-1", "sessionDescription": ANSWER.model_dump()})
    )
    reply = await client.new_session(offer=OFFER)
    (seen,) = sfu.seen
    assert seen.query == {}
    assert seen.body == {"sessionDescription": {"type": "offer", "sdp": OFFER.sdp}}
    assert seen.headers["content-type"] == "application/json"
    assert reply.sessionDescription == ANSWER


async def test_publishing_sends_the_offer_and_local_tracks_and_gets_an_answer(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("POST", "sessions/s-1/tracks/new", Reply(200, tracks_reply({"trackName": "mic", "mid": "0"})))
    reply = await client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    (seen,) = sfu.seen
    assert (seen.method, seen.route) == ("POST", "sessions/s-1/tracks/new")
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.headers["content-type"] == "application/json"
    # unset fields are left out, not sent as null
    assert seen.body == {
        "sessionDescription": {"type": "offer", "sdp": OFFER.sdp},
        "tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
    }
    assert reply.requiresImmediateRenegotiation is False
    assert reply.sessionDescription == ANSWER
    assert [(t.trackName, t.mid) for t in reply.tracks] == [("mic", "0")]


async def test_pulling_gets_an_sfu_offer_which_renegotiate_answers(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    pulled = {"location": "remote", "sessionId": "s-ai", "trackName": "ai-voice", "kind": "audio"}
    sfu.script(
        "POST",
        "sessions/s-1/tracks/new",
        Reply(
            200,
            {
                "requiresImmediateRenegotiation": True,
                "sessionDescription": SFU_OFFER,
                "tracks": [{**pulled, "mid": "1"}],
            },
        ),
    )
    sfu.script("PUT", "sessions/s-1/renegotiate", Reply(200, {}))
    reply = await client.new_tracks(
        "s-1",
        [Track(location="remote", sessionId="s-ai", trackName="ai-voice", kind="audio")],
        auto_discover=False,
    )
    assert reply.requiresImmediateRenegotiation is True
    assert reply.sessionDescription is not None and reply.sessionDescription.type == "offer"
    assert reply.tracks[0].mid == "1"
    assert await client.renegotiate("s-1", ANSWER) is None
    pull, answer = sfu.seen
    assert pull.body == {"tracks": [pulled], "autoDiscover": False}
    assert (answer.method, answer.route) == ("PUT", "sessions/s-1/renegotiate")
    assert answer.body == {"sessionDescription": {"type": "answer", "sdp": ANSWER.sdp}}


async def test_close_tracks_forced_and_with_an_offer(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script(
        "PUT",
        "sessions/s-1/tracks/close",
        Reply(200, tracks_reply({"mid": "0"}, {"mid": "1"}, answer=False)),
        Reply(200, tracks_reply({"mid": "2"})),
    )
    forced = await client.close_tracks("s-1", ["0", "1"], force=True)
    negotiated = await client.close_tracks("s-1", ["2"], force=False, offer=OFFER)
    first, second = sfu.seen
    assert (first.method, first.route) == ("PUT", "sessions/s-1/tracks/close")
    assert first.body == {"tracks": [{"mid": "0"}, {"mid": "1"}], "force": True}
    assert second.body == {
        "tracks": [{"mid": "2"}],
        "force": False,  # required by the API, so sent even when false
        "sessionDescription": {"type": "offer", "sdp": OFFER.sdp},
    }
    assert forced.sessionDescription is None and [t.mid for t in forced.tracks] == ["0", "1"]
    assert negotiated.sessionDescription == ANSWER


async def test_update_tracks(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    sfu.script(
        "PUT", "sessions/s-1/tracks/update", Reply(200, tracks_reply({"mid": "0", "trackName": "mic"}))
    )
    update = Track(location="local", mid="0", trackName="mic", bidirectionalMediaStream=True)
    reply = await client.update_tracks("s-1", [update], offer=OFFER)
    (seen,) = sfu.seen
    assert (seen.method, seen.route) == ("PUT", "sessions/s-1/tracks/update")
    assert seen.body == {
        "tracks": [{"location": "local", "mid": "0", "trackName": "mic", "bidirectionalMediaStream": True}],
        "sessionDescription": {"type": "offer", "sdp": OFFER.sdp},
    }
    assert reply.tracks[0].trackName == "mic"


async def test_get_session_reports_track_statuses(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    state = {
        "tracks": [
            {"location": "local", "mid": "0", "trackName": "mic", "status": "active"},
            {
                "location": "remote",
                "mid": "1",
                "trackName": "ai-voice",
                "sessionId": "s-ai",
                "status": "initializing",
            },
        ],
        "dataChannels": [{"location": "local", "dataChannelName": "events", "id": 2}],
    }
    sfu.script("GET", "sessions/s-1", Reply(200, state))
    session = await client.get_session("s-1")
    (seen,) = sfu.seen
    assert (seen.method, seen.route, seen.body) == ("GET", "sessions/s-1", None)
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert [(t.trackName, t.status) for t in session.tracks] == [
        ("mic", "active"),
        ("ai-voice", "initializing"),
    ]
    assert session.dataChannels[0].id == 2


async def test_datachannels_new_and_close(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    sfu.script(
        "POST",
        "sessions/s-1/datachannels/new",
        Reply(
            200,
            {
                "dataChannels": [
                    {"location": "local", "dataChannelName": "events", "id": 1},
                    {"location": "remote", "dataChannelName": "events", "sessionId": "s-ai", "id": 2},
                ]
            },
        ),
    )
    sfu.script("PUT", "sessions/s-1/datachannels/close", Reply(200, {}))
    reply = await client.new_datachannels(
        "s-1",
        [
            DataChannel(location="local", dataChannelName="events"),
            DataChannel(location="remote", dataChannelName="events", sessionId="s-ai"),
        ],
    )
    assert [c.id for c in reply.dataChannels] == [1, 2]
    assert await client.close_datachannels("s-1", [1, 2]) is None
    opened, closed = sfu.seen
    assert (opened.method, opened.route) == ("POST", "sessions/s-1/datachannels/new")
    assert opened.body == {
        "dataChannels": [
            {"location": "local", "dataChannelName": "events"},
            {"location": "remote", "dataChannelName": "events", "sessionId": "s-ai"},
        ]
    }
    assert (closed.method, closed.route) == ("PUT", "sessions/s-1/datachannels/close")
    assert closed.body == {"dataChannels": [{"id": 1}, {"id": 2}]}


# -- status codes ----------------------------------------------------------------------------------


async def test_400_is_an_invalid_request_with_the_description_truncated(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    long = "the tracks field is malformed " + "x" * 2000
    sfu.script("POST", "sessions/s-1/tracks/new", Reply(400, error("invalid_params", long)))
    with pytest.raises(RealtimeInvalidRequest) as caught:
        await client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    exc = caught.value
    assert (exc.status, exc.error_code, exc.http_status) == (400, "invalid_params", 400)
    assert "the tracks field is malformed" in exc.message and len(exc.message) < 500
    assert OFFER.sdp not in exc.message
    assert len(sfu.seen) == 1


async def test_413_is_payload_too_large(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    sfu.script("PUT", "sessions/s-1/tracks/update", Reply(413, error("payload_too_large")))
    with pytest.raises(RealtimePayloadTooLarge) as caught:
        await client.update_tracks("s-1", [Track(mid="0")])
    assert caught.value.status == 413 and isinstance(caught.value, RealtimeInvalidRequest)


async def test_401_names_the_variables_and_never_the_secret(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    # even an upstream that echoes the token must not get it into the message
    sfu.script("POST", "sessions/new", Reply(401, error("unauthorized", f"bad token {SECRET}")))
    with pytest.raises(RealtimeNotConfigured) as caught:
        await client.new_session()
    exc = caught.value
    assert (exc.status, exc.code, exc.field) == (503, "not_configured", APP_SECRET_VAR)
    assert APP_ID_VAR in str(exc) and APP_SECRET_VAR in str(exc)
    assert SECRET not in str(exc) and SECRET not in str(exc.to_dict())
    assert SECRET not in repr(client) and APP in repr(client)
    assert len(sfu.seen) == 1


async def test_missing_credentials_fail_before_any_request(sfu: ScriptedSFU, base_url: str) -> None:
    async with CloudflareRealtimeClient(APP, "", base_url=base_url) as realtime:
        with pytest.raises(RealtimeNotConfigured) as caught:
            await realtime.get_session("s-1")
    assert caught.value.field == APP_SECRET_VAR and sfu.seen == []


async def test_404_is_session_not_found_but_an_unknown_app_on_sessions_new(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("GET", "sessions/gone-long-ago", Reply(404, error("not_found")))
    sfu.script("POST", "sessions/new", Reply(404, error("not_found", "no such app")))
    with pytest.raises(SessionNotFound) as caught:
        await client.get_session("gone-long-ago")
    assert (caught.value.status, caught.value.error_code) == (404, "not_found")
    with pytest.raises(RealtimeNotConfigured) as unknown_app:
        await client.new_session()
    assert unknown_app.value.field == APP_ID_VAR
    assert len(sfu.seen) == 2


@pytest.mark.parametrize(
    "failure",
    [
        Reply(406, error("session_error", "another operation is in progress")),
        Reply(429, error("retryable_transient_error")),
        Reply(500, error("internal_error")),
        Reply(503, error("temporarily_unavailable_error")),
        Reply(502, "<html><body>502 Bad Gateway</body></html>"),
        Reply(200, error("backend_error")),  # a retryable code in a 200 is retried too
    ],
    ids=["406", "429", "500", "503", "502-html", "200-backend_error"],
)
async def test_retryable_failures_are_retried_then_succeed(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient, failure: Reply
) -> None:
    sfu.script("POST", "sessions/s-1/tracks/new", failure, failure, Reply(200, tracks_reply({"mid": "0"})))
    reply = await client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    assert reply.tracks[0].mid == "0"
    assert len(sfu.seen) == 3
    assert sfu.seen[0].body == sfu.seen[2].body  # the same request, sent again


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (Reply(429, error("retryable_transient_error")), "retryable_transient_error"),
        (Reply(500, error("internal_error")), "internal_error"),
        (Reply(503, error("temporarily_unavailable_error")), "temporarily_unavailable_error"),
        (Reply(502, "<html><body>502 Bad Gateway</body></html>"), "502 Bad Gateway"),
    ],
    ids=["429", "500", "503", "502-html"],
)
async def test_retries_back_off_and_end_in_unavailable(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient, failure: Reply, words: str
) -> None:
    sfu.script("GET", "sessions/s-1", *[failure] * 10)
    with pytest.raises(RealtimeUnavailable) as caught:
        await client.get_session("s-1")
    exc = caught.value
    assert (exc.status, exc.retryable, exc.http_status) == (503, True, failure.status)
    assert words in exc.message
    assert len(sfu.seen) == RETRIES + 1
    gaps = [b - a for a, b in zip(starts(sfu), starts(sfu)[1:], strict=False)]
    # equal jitter: attempt n waits between half and all of BACKOFF * 2**n
    for n, gap in enumerate(gaps):
        assert gap >= BACKOFF * 2**n / 2 * 0.9, gaps
    assert gaps[-1] > gaps[0], gaps


async def test_406_that_persists_ends_in_unavailable(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("PUT", "sessions/s-1/renegotiate", *[Reply(406, error("session_error"))] * 10)
    with pytest.raises(RealtimeUnavailable) as caught:
        await client.renegotiate("s-1", ANSWER)
    assert "another change to the session" in caught.value.message
    assert len(sfu.seen) == RETRIES + 1


async def test_410_is_session_gone_at_once(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    sfu.script("POST", "sessions/s-1/tracks/new", *[Reply(410, error("session_error", "session closed"))] * 3)
    with pytest.raises(SessionGone) as caught:
        await client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    assert (caught.value.status, caught.value.retryable, caught.value.error_code) == (
        410,
        False,
        "session_error",
    )
    assert "make a new session" in caught.value.message
    assert len(sfu.seen) == 1
    assert client.busy_sessions == 0


async def test_425_is_polled_until_the_session_connects(sfu: ScriptedSFU, base_url: str) -> None:
    not_yet = Reply(425, error("session_error", "peer connection not connected"))
    # more 425s than `retries`: waiting for the connection does not use up retries
    sfu.script(
        "POST", "sessions/s-1/tracks/new", *[not_yet] * (RETRIES + 2), Reply(200, tracks_reply({"mid": "0"}))
    )
    async with make_client(base_url, not_connected_wait=3.0) as realtime:
        reply = await realtime.new_tracks(
            "s-1", [Track(location="remote", sessionId="s-ai", trackName="ai-voice")]
        )
    assert reply.tracks[0].mid == "0"
    assert len(sfu.seen) == RETRIES + 3


async def test_425_past_not_connected_wait_is_session_not_connected(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("GET", "sessions/s-1", *[Reply(425, error("session_error"))] * 100)
    began = time.monotonic()
    with pytest.raises(SessionNotConnected) as caught:
        await client.get_session("s-1")
    waited = time.monotonic() - began
    assert caught.value.status == 425 and caught.value.http_status == 425
    assert 0.3 <= waited < 1.5
    assert 2 <= len(sfu.seen) < 100


# -- errors inside a 200 ----------------------------------------------------------------------------


async def test_a_failed_track_in_a_200_is_a_track_error_naming_only_that_track(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    reply = tracks_reply(
        {"location": "remote", "trackName": "ai-voice", "mid": "0"},
        {
            "location": "remote",
            "trackName": "ai-video",
            "mid": "1",
            **error("not_found_track_error", "no such track"),
        },
        answer=False,
    )
    sfu.script("POST", "sessions/s-1/tracks/new", Reply(200, reply))
    with pytest.raises(TrackError) as caught:
        await client.new_tracks(
            "s-1",
            [
                Track(location="remote", sessionId="s-ai", trackName="ai-voice"),
                Track(location="remote", sessionId="s-ai", trackName="ai-video"),
            ],
        )
    exc = caught.value
    assert [t.trackName for t in exc.failed] == ["ai-video"]
    assert [t.trackName for t in exc.reply.tracks] == ["ai-voice", "ai-video"]
    assert "ai-video" in exc.message and "mid 1" in exc.message and "not_found_track_error" in exc.message
    assert "ai-voice" not in exc.message
    assert (exc.status, exc.error_code, exc.http_status) == (502, "not_found_track_error", 200)
    assert len(sfu.seen) == 1


async def test_a_failed_close_item_is_a_track_error(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script(
        "PUT",
        "sessions/s-1/tracks/close",
        Reply(200, tracks_reply({"mid": "0"}, {"mid": "7", **error("close_track_error")}, answer=False)),
    )
    with pytest.raises(TrackError) as caught:
        await client.close_tracks("s-1", ["0", "7"], force=True)
    assert [t.mid for t in caught.value.failed] == ["7"]


async def test_a_failed_data_channel_is_a_data_channel_error(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    channels = [
        {"location": "local", "dataChannelName": "events", "id": 1},
        {
            "location": "remote",
            "dataChannelName": "chat",
            "sessionId": "s-ai",
            **error("not_found_track_error"),
        },
    ]
    sfu.script("POST", "sessions/s-1/datachannels/new", Reply(200, {"dataChannels": channels}))
    with pytest.raises(DataChannelError) as caught:
        await client.new_datachannels(
            "s-1",
            [
                DataChannel(location="local", dataChannelName="events"),
                DataChannel(location="remote", dataChannelName="chat", sessionId="s-ai"),
            ],
        )
    assert [c.dataChannelName for c in caught.value.failed] == ["chat"]
    assert len(caught.value.reply.dataChannels) == 2
    assert "chat" in caught.value.message and "events" not in caught.value.message


async def test_a_top_level_error_code_in_a_200_is_an_error(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script(
        "PUT", "sessions/s-1/renegotiate", Reply(200, error("invalid_session_description", "bad m-line"))
    )
    with pytest.raises(RealtimeInvalidRequest) as caught:
        await client.renegotiate("s-1", ANSWER)
    assert caught.value.error_code == "invalid_session_description" and "bad m-line" in caught.value.message
    assert len(sfu.seen) == 1


async def test_a_reply_of_the_wrong_shape_is_a_realtime_error(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("POST", "sessions/new", Reply(201, {"session": "no id here"}))
    with pytest.raises(RealtimeError) as caught:
        await client.new_session()
    assert caught.value.status == 502 and "sessionId" in caught.value.message


# -- serialisation ---------------------------------------------------------------------------------


async def test_mutations_of_one_session_run_one_at_a_time_in_submission_order(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("POST", "sessions/s-1/tracks/new", *[Reply(200, tracks_reply(), delay=0.05)] * 5)
    await asyncio.gather(
        *(
            client.new_tracks("s-1", [Track(location="local", mid=str(i), trackName=f"t{i}")])
            for i in range(5)
        )
    )
    assert [s.body["tracks"][0]["trackName"] for s in sfu.seen] == ["t0", "t1", "t2", "t3", "t4"]
    for earlier, later in zip(sfu.seen, sfu.seen[1:], strict=False):
        assert later.start >= earlier.end  # never two at the server at once
    assert client.busy_sessions == 0


async def test_different_sessions_and_reads_do_not_wait(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    for session in ("s-1", "s-2"):
        sfu.script("POST", f"sessions/{session}/tracks/new", Reply(200, tracks_reply(), delay=0.2))
    sfu.script("GET", "sessions/s-1", Reply(200, {"tracks": []}))

    async def read_soon() -> None:
        await asyncio.sleep(0.05)  # while s-1's mutation is at the server
        await client.get_session("s-1")

    await asyncio.gather(
        client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")]),
        client.new_tracks("s-2", [Track(location="local", mid="0", trackName="mic")]),
        read_soon(),
    )
    by_route = {s.route: s for s in sfu.seen}
    one, two, read = (
        by_route["sessions/s-1/tracks/new"],
        by_route["sessions/s-2/tracks/new"],
        by_route["sessions/s-1"],
    )
    assert overlapping(one, two)
    assert overlapping(one, read)


async def test_a_mutation_that_times_out_is_not_retried(sfu: ScriptedSFU, base_url: str) -> None:
    sfu.script(
        "POST", "sessions/s-1/tracks/new", Reply(200, tracks_reply(), delay=1.0), Reply(200, tracks_reply())
    )
    async with make_client(base_url, timeout=0.2) as realtime:
        with pytest.raises(RealtimeTimeout) as caught:
            await realtime.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
        assert realtime.busy_sessions == 0
    exc = caught.value
    assert (exc.status, exc.code) == (504, "timeout")
    assert isinstance(exc, RealtimeUnavailable) and isinstance(exc.__cause__, httpx.ReadTimeout)
    assert "may or may not have applied it" in exc.message
    assert len(sfu.seen) == 1


async def test_a_read_that_times_out_is_retried(sfu: ScriptedSFU, base_url: str) -> None:
    sfu.script(
        "GET", "sessions/s-1", Reply(200, {"tracks": []}, delay=1.0), Reply(200, {"tracks": [{"mid": "0"}]})
    )
    async with make_client(base_url, timeout=0.2) as realtime:
        session = await realtime.get_session("s-1")
    assert session.tracks[0].mid == "0"
    assert len(sfu.seen) == 2


async def test_an_unreachable_api_is_retried_then_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="parley.rtc.cloudflare")
    async with make_client("http://127.0.0.1:9/v1") as realtime:  # nothing listens on port 9
        with pytest.raises(RealtimeUnavailable) as caught:
            await realtime.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "Cannot reach Cloudflare Realtime" in caught.value.message
    attempts = [r for r in caught_records(caplog) if "ConnectError" in r]
    assert len(attempts) == RETRIES + 1


async def test_session_queues_do_not_accumulate(sfu: ScriptedSFU, client: CloudflareRealtimeClient) -> None:
    sessions = [f"s-{n}" for n in range(40)]
    for n, session in enumerate(sessions):
        outcome = [
            Reply(200, tracks_reply()),
            Reply(410, error("session_error")),
            Reply(400, error("invalid_params")),
        ][n % 3]
        sfu.script("POST", f"sessions/{session}/tracks/new", Reply(200, tracks_reply(), delay=0.01), outcome)
    calls = [
        client.new_tracks(session, [Track(location="local", mid="0", trackName="mic")])
        for session in sessions
        for _ in range(2)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(isinstance(r, SessionGone) for r in results) == 13
    assert sum(isinstance(r, RealtimeInvalidRequest) for r in results) == 13
    assert client.busy_sessions == 0
    client.forget("never-seen")  # forgetting an unknown session is harmless
    assert client.busy_sessions == 0


async def test_forget_while_queued_leaves_no_queue_behind(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    sfu.script("PUT", "sessions/s-1/tracks/update", *[Reply(200, tracks_reply(), delay=0.05)] * 3)
    calls = [asyncio.ensure_future(client.update_tracks("s-1", [Track(mid="0")])) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert client.busy_sessions == 1
    client.forget("s-1")
    assert client.busy_sessions == 0
    await asyncio.gather(*calls)
    assert client.busy_sessions == 0
    for earlier, later in zip(sfu.seen, sfu.seen[1:], strict=False):
        assert later.start >= earlier.end  # the queued calls kept their order in the old queue


# -- local checks and logging ----------------------------------------------------------------------


async def test_requests_the_api_would_refuse_are_refused_before_sending(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient
) -> None:
    with pytest.raises(RealtimeInvalidRequest) as too_many:
        await client.new_tracks("s-1", [Track(location="local", mid=str(i)) for i in range(65)])
    assert (too_many.value.field, too_many.value.limit) == ("tracks", 64)
    with pytest.raises(RealtimeInvalidRequest):
        await client.close_tracks("s-1", [], force=True)
    with pytest.raises(RealtimeInvalidRequest):
        await client.renegotiate("s-1", OFFER)  # an offer where an answer belongs
    with pytest.raises(RealtimeInvalidRequest):
        await client.new_tracks("s-1", [Track(location="local", mid="0")], offer=ANSWER)
    assert sfu.seen == []
    assert client.busy_sessions == 0


def caught_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "parley.rtc.cloudflare"]


async def test_one_debug_line_per_request_without_secret_or_sdp(
    sfu: ScriptedSFU, client: CloudflareRealtimeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="parley.rtc.cloudflare")
    sfu.script(
        "POST",
        "sessions/s-1/tracks/new",
        Reply(503, error("backend_error")),
        Reply(200, tracks_reply({"mid": "0"})),
    )
    await client.new_tracks("s-1", [Track(location="local", mid="0", trackName="mic")], offer=OFFER)
    lines = caught_records(caplog)
    assert len(lines) == 2
    assert all(f"POST /apps/{APP}/sessions/s-1/tracks/new" in line and "ms" in line for line in lines)
    assert "503" in lines[0] and "200" in lines[1]
    assert not any(SECRET in line or "client-offer" in line or "sfu-answer" in line for line in lines)
