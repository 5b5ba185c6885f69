"""CallRegistry: every live call of the server, with its peer; closes them all at shutdown.

aiortc is imported on the first call, not here, so a server without it still starts (and
answers offers with a 503 naming the package to install).

Each call is a (CallPeer, VoiceCall) pair with one id. The registry is the only owner: a peer
that closes itself (hang-up over the data channel, ICE failure, idle) reports back and is
forgotten, so nothing keeps a closed peer alive.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.errors import Busy, NotFound, ParleyError, ProviderNotConfigured
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.vad import SpeechModel
from parley.rtc.ice import IceConfig, IceServer
from parley.sessions.registry import SessionRegistry
from parley.voice.pipeline import VoiceCall, VoiceConfig, new_call_id

if TYPE_CHECKING:
    from parley.rtc.peer import CallPeer
    from parley.rtc.turn import CloudflareTURN

log = logging.getLogger("parley.rtc")


@dataclass(slots=True, frozen=True)
class CallConfig:
    ice_servers: tuple[IceServer, ...] = ()
    idle_seconds: float = 30.0
    max_calls: int = 50
    voice: VoiceConfig = field(default_factory=VoiceConfig)


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
    ) -> None:
        """`turn`, when given, adds fresh TURN credentials to every call; the registry closes it."""
        self._sessions = sessions
        self._vad = vad
        self._stt = stt
        self._tts = tts
        self.config = config or CallConfig()
        self._turn = turn
        self._peers: dict[str, CallPeer] = {}
        self._closed = False

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

    async def open(self, session_id: str, offer_sdp: str) -> tuple[str, str]:
        """Start a call of `session_id` from a browser's SDP offer: (call id, answer SDP)."""
        self._check_room()
        if self._vad is None:
            raise ProviderNotConfigured(
                "voice calls need voice activity detection: pip install 'parley[local]' "
                "(Silero or webrtcvad), or set PARLEY_VAD",
                field="PARLEY_VAD",
            )
        try:
            from parley.rtc.peer import CallPeer
        except ImportError as exc:  # aiortc (or PyAV) is an optional extra
            raise ProviderNotConfigured(
                "voice calls need aiortc: pip install 'parley[local]'", field="aiortc"
            ) from exc
        ice = await self.ice_for_call()
        # Other offers (or shutdown) may have come in while the TURN API answered.
        self._check_room()
        call_id = new_call_id()
        peer = CallPeer(
            call_id,
            ice_servers=ice.servers,
            idle_seconds=self.config.idle_seconds,
            on_closed=self._forget,
        )
        call = VoiceCall(
            session_id,
            sessions=self._sessions,
            model=self._vad.fresh(),
            stt=self._stt,
            tts=self._tts,
            config=self.config.voice,
            on_event=peer.send,
            call_id=call_id,
        )
        self._peers[call_id] = peer
        call.start()
        try:
            answer = await peer.answer(call, offer_sdp)
        except BaseException:
            await peer.aclose("bad offer")
            raise
        log.info("call opened call=%s session=%s live=%d", call_id, session_id, len(self._peers))
        return call_id, answer

    def _check_room(self) -> None:
        if self._closed:
            raise Busy("the server is shutting down")
        if len(self._peers) >= self.config.max_calls:
            raise Busy(
                f"too many calls at once (limit {self.config.max_calls})",
                field="callId",
                limit=self.config.max_calls,
            )

    async def hangup(self, call_id: str) -> None:
        peer = self._peers.get(call_id)
        if peer is None:
            raise NotFound(f"no call {call_id!r}", field="callId")
        await peer.aclose("hangup")

    def _forget(self, peer: CallPeer, reason: str) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]

    async def aclose(self) -> None:
        """Close every call (server shutdown); new offers are refused from now on."""
        self._closed = True
        peers = list(self._peers.values())
        await asyncio.gather(*(p.aclose("shutdown") for p in peers), return_exceptions=True)
        self._peers.clear()
        if self._turn is not None:
            await self._turn.aclose()
