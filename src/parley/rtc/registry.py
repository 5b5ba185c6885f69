"""CallRegistry: every live call of the server, with its peer; closes them all at shutdown.

aiortc is imported on the first call, not here, so a server without it still starts (and
answers offers with a 503 naming the package to install).

Each call is a (peer, VoiceCall) pair with one id: a CallPeer (direct mode: the browser's own
WebRTC connection) or an SFUCallPeer (Cloudflare mode: the assistant's participant in the SFU).
The registry is the only owner: a peer that closes itself (hang-up, ICE failure, idle, an SFU
that stays unreachable) reports back and is forgotten, so nothing keeps a closed peer alive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from parley.errors import Busy, NotFound, ParleyError, ProviderNotConfigured
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.vad import SpeechModel
from parley.rtc.ice import IceConfig, IceServer
from parley.sessions.directory import SessionDirectory
from parley.sessions.events import Event
from parley.sessions.keys import owner_of
from parley.sessions.registry import SessionRegistry
from parley.voice.call import Call
from parley.voice.pipeline import VoiceCall, VoiceConfig, new_call_id
from parley.xiaozhi.upstream import Upstream, UpstreamConfig

if TYPE_CHECKING:
    from parley.rtc.cloudflare import CloudflareRealtimeClient
    from parley.rtc.peer import CallPeer
    from parley.rtc.sfu_peer import Recovery, SFUCallPeer, TrackRef
    from parley.rtc.turn import CloudflareTURN

log = logging.getLogger("parley.rtc")


@dataclass(slots=True, frozen=True)
class CallConfig:
    ice_servers: tuple[IceServer, ...] = ()
    idle_seconds: float = 30.0
    max_calls: int = 50
    #: calls one client address may hold at once (until users exist, the address is the client)
    max_calls_per_client: int = 3
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    #: Cloudflare mode: how the assistant's SFU participant recovers (None: its defaults)
    recovery: Recovery | None = None
    #: PARLEY_VOICE_BACKEND=xiaozhi: every call's AI is this remote XiaoZhi server (xiaozhi/bridge.py)
    bridge: UpstreamConfig | None = None


class CallRegistry:
    def __init__(
        self,
        *,
        sessions: SessionRegistry,
        vad: SpeechModel | None,
        stt: STTProvider,
        tts: TTSProvider,
        config: CallConfig | None = None,
        turn: CloudflareTURN | None = None,
        realtime: CloudflareRealtimeClient | None = None,
        on_call_end: Callable[[str, float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        directory: SessionDirectory | None = None,
    ) -> None:
        """`turn`, when given, adds fresh TURN credentials to every call; `realtime` enables
        Cloudflare-mode calls. The registry closes both. `on_call_end(owner, seconds)` is told how
        long each call lasted (the owner's daily call minutes). `directory`: a call runs its
        session's turns on this node, which holds the session while the call lasts."""
        self._sessions = sessions
        self._directory = directory
        #: call id -> its session key, while the call holds the session here
        self._keys: dict[str, str] = {}
        #: told each call's id when it opens and when it ends (rtc/cluster.py records where it is)
        self.on_open: Callable[[str], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self._vad = vad
        self._stt = stt
        self._tts = tts
        self.config = config or CallConfig()
        self._upstream: Upstream | None = None
        self._turn = turn
        self.realtime = realtime
        self._peers: dict[str, CallPeer | SFUCallPeer] = {}
        #: call id -> the client address that opened it
        self._clients: dict[str, str] = {}
        #: call id -> (the user who owns it, when it opened on `clock`)
        self._owners: dict[str, tuple[str, float]] = {}
        self._on_call_end = on_call_end
        self._clock = clock
        #: the usage reports of ended calls, still being written
        self._reports: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def vad(self) -> SpeechModel | None:
        """The voice activity model calls use (None: voice calls are unavailable)."""
        return self._vad

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._peers

    @property
    def ice_servers(self) -> tuple[IceServer, ...]:
        """The configured (static) servers; `ice_for_call` adds generated TURN servers."""
        return self.config.ice_servers

    async def ice_for_call(self) -> IceConfig:
        """The configured servers plus, with a TURN key, freshly generated Cloudflare ones.

        Credentials are generated per call, never cached, so each lives only its short TTL. If the
        TURN API fails the call still gets the configured servers (host candidates may be enough)
        and a warning saying why TURN is missing.
        """
        if self._turn is None:
            return IceConfig(self.config.ice_servers)
        try:
            generated = await self._turn.ice_servers()
        except ParleyError as exc:
            log.warning("no Cloudflare TURN servers for this call: %s", exc.message)
            return IceConfig(
                self.config.ice_servers,
                f"TURN relay unavailable, calls may fail behind strict NATs: {exc.message}",
            )
        return IceConfig(self.config.ice_servers + generated)

    async def open(
        self, session_id: str, offer_sdp: str, *, language: str | None = None, client: str | None = None
    ) -> tuple[str, str]:
        """Start a call of `session_id` from a browser's SDP offer: (call id, answer SDP).

        `language` (the one the user picked) fixes speech-to-text's language for this call;
        None keeps PARLEY_STT_LANGUAGE, or detection per utterance. `client` (its address) may
        hold at most `max_calls_per_client` calls."""
        self._check_can_call()
        self._check_room(client)
        from parley.rtc.peer import CallPeer

        ice = await self.ice_for_call()
        # the call's turns run here (several nodes: this node takes the session)
        await self._pin(session_id)
        # Other offers (or shutdown) may have come in while the TURN API answered.
        self._check_room(client)
        call_id = new_call_id()
        peer = CallPeer(
            call_id,
            ice_servers=ice.servers,
            idle_seconds=self.config.idle_seconds,
            on_closed=self._forget,
        )
        call = self._new_call(session_id, call_id, peer.send, language=language)
        self._peers[call_id] = peer
        self._opened(call_id, session_id, client)
        call.start()
        try:
            answer = await peer.answer(call, offer_sdp)
        except BaseException:
            await peer.aclose("bad offer")
            raise
        log.info("call opened call=%s session=%s live=%d", call_id, session_id, len(self._peers))
        return call_id, answer

    async def open_sfu(self, session_id: str, mic: TrackRef, *, client: str | None = None) -> SFUCallPeer:
        """Start a Cloudflare-mode call of `session_id` whose user speaks into the SFU track `mic`.

        Returns once the assistant publishes its voice and pulls the mic (`peer.voice` says
        where the browser pulls the voice from).
        """
        if self.realtime is None:
            raise NotFound(
                "Cloudflare mode is off: set PARLEY_RTC=cloudflare with CLOUDFLARE_REALTIME_APP_ID and "
                "CLOUDFLARE_REALTIME_APP_SECRET",
                field="PARLEY_RTC",
            )
        self._check_can_call()
        self._check_room(client)
        await self._pin(session_id)
        self._check_room(client)
        from parley.rtc.sfu_peer import SFUCallPeer

        call_id = new_call_id()
        peer = SFUCallPeer(
            call_id,
            client=self.realtime,
            mic=mic,
            ice=self.ice_for_call,
            idle_seconds=self.config.idle_seconds,
            recovery=self.config.recovery,
            on_closed=self._forget,
        )
        call = self._new_call(session_id, call_id, peer.send)
        self._peers[call_id] = peer
        self._opened(call_id, session_id, client)
        call.start()
        try:
            await peer.start(call)
        except BaseException:
            await peer.aclose("sfu setup failed")
            raise
        log.info("sfu call opened call=%s session=%s live=%d", call_id, session_id, len(self._peers))
        return peer

    def sfu_call(self, call_id: str) -> SFUCallPeer:
        from parley.rtc.sfu_peer import SFUCallPeer

        peer = self._peers.get(call_id)
        if not isinstance(peer, SFUCallPeer):
            raise NotFound(f"no Cloudflare-mode call {call_id!r}", field="callId")
        return peer

    def pullable_by(self, sfu_session_id: str) -> set[str]:
        """SFU sessions whose tracks the browser session `sfu_session_id` may pull: the voices of
        the calls it speaks into, and nothing else."""
        from parley.rtc.sfu_peer import SFUCallPeer

        out = set()
        for peer in self._peers.values():
            if isinstance(peer, SFUCallPeer) and peer.mic.session_id == sfu_session_id:
                sid = peer.session_id
                if sid is not None:
                    out.add(sid)
        return out

    def _check_can_call(self) -> None:
        self._check_room()
        if self._vad is None:
            raise ProviderNotConfigured(
                "voice calls need voice activity detection: pip install 'parley[local]' "
                "(Silero or webrtcvad), or set PARLEY_VAD",
                field="PARLEY_VAD",
            )
        try:
            import aiortc  # noqa: F401
        except ImportError as exc:  # aiortc (or PyAV) is an optional extra
            raise ProviderNotConfigured(
                "voice calls need aiortc: pip install 'parley[local]'", field="aiortc"
            ) from exc

    def _new_call(
        self,
        session_id: str,
        call_id: str,
        on_event: Callable[[Event], None],
        *,
        language: str | None = None,
    ) -> Call:
        assert self._vad is not None
        voice = self.config.voice
        if language is not None:
            voice = replace(voice, stt_language=language)
        if (upstream := self._bridge()) is not None:
            from parley.xiaozhi.bridge import BridgeCall  # PyAV's Opus: loaded with the first call

            return BridgeCall(
                session_id,
                sessions=self._sessions,
                upstream=upstream,
                model=self._vad.fresh(),
                config=voice,
                on_event=on_event,
                call_id=call_id,
            )
        return VoiceCall(
            session_id,
            sessions=self._sessions,
            model=self._vad.fresh(),
            stt=self._stt,
            tts=self._tts,
            config=voice,
            on_event=on_event,
            call_id=call_id,
        )

    def _bridge(self) -> Upstream | None:
        """The remote XiaoZhi server calls go to (None: Parley answers them), one for all calls:
        its device identities are shared (xiaozhi/identity.py)."""
        bridge = self.config.bridge
        if bridge is None:
            return None
        if self._upstream is None or self._upstream.config != bridge:
            self._upstream = Upstream(bridge)
        return self._upstream

    def _check_room(self, client: str | None = None) -> None:
        if self._closed:
            raise Busy("the server is shutting down")
        limit = self.config.max_calls_per_client
        if client is not None and sum(1 for c in self._clients.values() if c == client) >= limit:
            raise Busy(
                f"too many calls from this address at once (limit {limit}); hang one up first",
                field="callId",
                limit=limit,
            )
        if len(self._peers) >= self.config.max_calls:
            raise Busy(
                f"too many calls at once (limit {self.config.max_calls})",
                field="callId",
                limit=self.config.max_calls,
            )

    def owner(self, call_id: str) -> str | None:
        owned = self._owners.get(call_id)
        return owned[0] if owned else None

    async def hangup(self, call_id: str, *, owner: str | None = None) -> None:
        """End a call; with `owner`, only a call of that user (another's is "no call", as if absent)."""
        peer = self._peers.get(call_id)
        if peer is None or (owner is not None and self.owner(call_id) != owner):
            raise NotFound(f"no call {call_id!r}", field="callId")
        await peer.aclose("hangup")

    async def _pin(self, session_key: str) -> None:
        if self._directory is not None:
            await self._directory.own(session_key)

    def _opened(self, call_id: str, session_key: str, client: str | None) -> None:
        if self._directory is not None:
            self._directory.pin(session_key)  # owned just before
            self._keys[call_id] = session_key
        if self.on_open is not None:
            self.on_open(call_id)
        if client is not None:
            self._clients[call_id] = client
        self._owners[call_id] = (owner_of(session_key), self._clock())

    def _forget(self, peer: CallPeer | SFUCallPeer, reason: str) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
            self._clients.pop(peer.id, None)
            key = self._keys.pop(peer.id, None)
            if key is not None and self._directory is not None:
                self._directory.unpin(key)
            if self.on_close is not None:
                self.on_close(peer.id)
            owned = self._owners.pop(peer.id, None)
            if owned is not None and self._on_call_end is not None:
                task = asyncio.create_task(self._report(owned[0], self._clock() - owned[1]))
                self._reports.add(task)
                task.add_done_callback(self._reports.discard)

    async def _report(self, owner: str, seconds: float) -> None:
        assert self._on_call_end is not None
        try:
            await self._on_call_end(owner, seconds)
        except Exception:
            log.exception("could not count %.1f s of call time for user=%s", seconds, owner)

    async def aclose(self) -> None:
        """Close every call (server shutdown); new offers are refused from now on."""
        self._closed = True
        peers = list(self._peers.values())
        await asyncio.gather(*(p.aclose("shutdown") for p in peers), return_exceptions=True)
        self._peers.clear()
        # the calls' time is counted before the store it goes to closes
        await asyncio.gather(*self._reports, return_exceptions=True)
        if self._turn is not None:
            await self._turn.aclose()
        if self.realtime is not None:
            await self.realtime.aclose()
